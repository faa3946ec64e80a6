package bench

import (
	"context"
	"math"
	"testing"

	"github.com/cyclealign/cyclealign/internal/model"
)

func benchModel(b *testing.B) (*model.Model, Options) {
	return sizedModel(b, Defaults())
}

func sizedModel(b *testing.B, o Options) (*model.Model, Options) {
	be, err := model.NewBackend()
	if err != nil {
		b.Fatal(err)
	}
	m, err := RandomModel(be, o)
	if err != nil {
		b.Fatal(err)
	}
	return m, o
}

// BenchmarkScore measures scoring of 16 x 128 tokens on the ~10M-parameter model.
func BenchmarkScore(b *testing.B) {
	m, o := benchModel(b)
	seqs := make([][]int, o.Batch)
	for i := range seqs {
		for j := 0; j < o.ScoreLen; j++ {
			seqs[i] = append(seqs[i], (i*131+j*17)%o.Vocab)
		}
	}
	ctx := context.Background()
	if _, err := m.LogProbs(ctx, seqs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.LogProbs(ctx, seqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*o.Batch*o.ScoreLen)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkDecodeStep measures one cached decoding step for 16 rows.
func BenchmarkDecodeStep(b *testing.B) { decodeSteps(b, benchModel) }

// BenchmarkDecodeOneRow10M measures one cached decoding step of one row on the bench model.
func BenchmarkDecodeOneRow10M(b *testing.B) {
	decodeSteps(b, func(b *testing.B) (*model.Model, Options) {
		o := Defaults()
		o.Batch = 1
		return sizedModel(b, o)
	})
}

// BenchmarkDecodeOneRow100M measures one cached decoding step of one row on the 100M model:
// what serve does for one user (profile it with -cpuprofile -benchtime 2000x).
func BenchmarkDecodeOneRow100M(b *testing.B) {
	decodeSteps(b, func(b *testing.B) (*model.Model, Options) {
		o := Size100M()
		o.Batch = 1
		return sizedModel(b, o)
	})
}

// BenchmarkDecodeOneRow100MBF16 is BenchmarkDecodeOneRow100M with the weights in bfloat16.
func BenchmarkDecodeOneRow100MBF16(b *testing.B) {
	decodeSteps(b, func(b *testing.B) (*model.Model, Options) {
		o := Size100M()
		o.Batch, o.DType = 1, "bfloat16"
		return sizedModel(b, o)
	})
}

// decodeSteps times cached decoding steps as the bench command does: a fresh decoder (its
// prefill untimed) every o.NewTokens steps, so the context stays the workload's.
func decodeSteps(b *testing.B, build func(b *testing.B) (*model.Model, Options)) {
	m, o := build(b)
	prompts := make([][]int, o.Batch)
	for i := range prompts {
		for j := 0; j < o.PromptLen; j++ {
			prompts[i] = append(prompts[i], (i*131+j*17)%o.Vocab)
		}
	}
	next := make([]int, o.Batch)
	var d model.Decoder
	left := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if left == 0 {
			b.StopTimer()
			var err error
			if d, err = m.NewDecoder(prompts, o.NewTokens, true); err != nil {
				b.Fatal(err)
			}
			if _, err := d.Start(); err != nil {
				b.Fatal(err)
			}
			left = o.NewTokens - 1
			b.StartTimer()
		}
		if _, err := d.Step(next); err != nil {
			b.Fatal(err)
		}
		left--
	}
	b.ReportMetric(float64(b.N*o.Batch)/b.Elapsed().Seconds(), "tokens/s")
}

// TestEnginesAgreeOnBenchModel: on the bench model itself (10M parameters), the own CPU path's
// log-probabilities equal the GoMLX graphs' within 1e-5.
func TestEnginesAgreeOnBenchModel(t *testing.T) {
	be, err := model.NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	o := Defaults()
	m, err := RandomModel(be, o)
	if err != nil {
		t.Fatal(err)
	}
	seqs := [][]int{make([]int, 24), make([]int, 17)}
	for i, s := range seqs {
		for j := range s {
			s[j] = (i*977 + j*131 + 7) % o.Vocab
		}
	}
	ctx := context.Background()
	own, err := m.LogProbs(ctx, seqs)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetEngine("gomlx"); err != nil {
		t.Fatal(err)
	}
	graphs, err := m.LogProbs(ctx, seqs)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i := range seqs {
		for j := range own[i] {
			worst = max(worst, math.Abs(float64(own[i][j]-graphs[i][j])))
		}
	}
	if worst > 1e-5 {
		t.Fatalf("log-probabilities differ by up to %g", worst)
	}
	t.Logf("largest difference %.2g", worst)
}
