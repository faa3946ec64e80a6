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

// BenchmarkDecodeOneRow100M measures one cached decoding step of one row on the 100M model:
// what serve does for one user (profile it with -cpuprofile).
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

func decodeSteps(b *testing.B, build func(b *testing.B) (*model.Model, Options)) {
	m, o := build(b)
	prompts := make([][]int, o.Batch)
	for i := range prompts {
		for j := 0; j < o.PromptLen; j++ {
			prompts[i] = append(prompts[i], (i*131+j*17)%o.Vocab)
		}
	}
	d, err := m.NewDecoder(prompts, b.N+2, true)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.Start(); err != nil {
		b.Fatal(err)
	}
	next := make([]int, o.Batch)
	d.Step(next)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Step(next); err != nil {
			b.Fatal(err)
		}
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
