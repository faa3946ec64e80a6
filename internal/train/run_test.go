package train

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/model"
)

func moreExamples(t *testing.T) []Example {
	m := loadTiny(t)
	exs := tinyExamples(m)
	for _, r := range []Ranked{
		{Prompt: "\n\nHuman: Why is the sky blue?\n\nAssistant:", Candidates: []string{" Sunlight scatters off air.", " Because."}},
		{Prompt: "\n\nHuman: Name a fruit.\n\nAssistant:", Candidates: []string{" An apple.", " A car.", " Rocks"}},
		{Prompt: "\n\nHuman: Count to three.\n\nAssistant:", Candidates: []string{" One, two, three.", " Four."}},
	} {
		exs = append(exs, Tokenize(m.Tokenizer, r, 0, End{}))
	}
	return exs
}

// TestKillAndResume stops a run after a step that no checkpoint recorded, leaves a half-written
// checkpoint behind as a kill during a save would, resumes from disk in a fresh model, and
// compares losses and final weights with an uninterrupted run.
func TestKillAndResume(t *testing.T) {
	t.Run("full", func(t *testing.T) { testKillAndResume(t, nil) })
	t.Run("lora-dropout", func(t *testing.T) {
		testKillAndResume(t, &model.LoRA{R: 2, Alpha: 4, Dropout: 0.2, Targets: []string{"q", "v", "up"}})
	})
}

func testKillAndResume(t *testing.T, lora *model.LoRA) {
	ctx := context.Background()
	fresh := func() *model.Model {
		m := loadTiny(t)
		if lora != nil {
			if err := m.AddLoRA(*lora, 5); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	newTrainer := func(m *model.Model, l Loss, o Optimizer) *Trainer {
		tr := NewTrainer(m, l, o)
		tr.DropoutSeed = 11
		return tr
	}
	data := moreExamples(t)
	opt := DefaultOptimizer()
	opt.LR, opt.WarmupSteps = 2e-3, 2
	ro := RunOptions{Epochs: 2, BatchSize: 2, GradAccum: 2, Seed: 9, SaveEvery: 2, Keep: 2}
	opt.TotalSteps = ro.TotalSteps(len(data))
	loss := Loss{Kind: PRO, SFTWeight: 0.5}

	full := ro
	full.Out = t.TempDir()
	mA := fresh()
	want, err := Run(ctx, newTrainer(mA, loss, opt), data, full)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 6 {
		t.Fatalf("uninterrupted run took %d steps, want 6", len(want))
	}

	cut := ro
	cut.Out = t.TempDir()
	cut.StopAfter = 3
	if _, err := Run(ctx, newTrainer(fresh(), loss, opt), data, cut); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(cut.Out, "checkpoints")
	if err := os.MkdirAll(filepath.Join(ck, "step-00000004.tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ck, "step-00000004.tmp", "params.safetensors"), []byte("half"), 0o644)

	cut.StopAfter = 0
	mB := fresh()
	got, err := Run(ctx, newTrainer(mB, loss, opt), data, cut)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Step != 3 {
		t.Fatalf("resumed run did steps %d.., %d of them; want 3..6", got[0].Step, len(got))
	}
	for i, m := range got {
		w := want[m.Step-1]
		if math.Abs(m.Loss-w.Loss) > 1e-6 || math.Abs(m.GradNorm-w.GradNorm) > 1e-6 {
			t.Fatalf("step %d: resumed loss %.8f norm %.8f, uninterrupted %.8f %.8f", m.Step, m.Loss, m.GradNorm, w.Loss, w.GradNorm)
		}
		_ = i
	}
	if lora != nil {
		mA.MergeLoRA()
		mB.MergeLoRA()
	}
	for _, n := range mA.TensorNames() {
		a, b := weightValue(t, mA, n), weightValue(t, mB, n)
		for i := range a {
			if math.Abs(float64(a[i]-b[i])) > 1e-6 {
				t.Fatalf("%s[%d]: %v vs %v", n, i, a[i], b[i])
			}
		}
	}
	// metrics.jsonl holds each step once, in order.
	f, err := os.Open(filepath.Join(cut.Out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	step := 0
	for sc.Scan() {
		var m Metrics
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		step++
		if m.Step != step {
			t.Fatalf("metrics line %d is step %d", step, m.Step)
		}
	}
	if step != 6 {
		t.Fatalf("metrics has %d lines", step)
	}
	entries, _ := os.ReadDir(ck)
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".tmp" {
			t.Fatalf("leftover %s", e.Name())
		}
	}
}

// Run refuses options that cannot train (they divided by zero, trained nothing or climbed the
// loss) before it writes anything.
func TestRunRefusesBadOptions(t *testing.T) {
	m := loadTiny(t)
	data := tinyExamples(m)
	good := RunOptions{Epochs: 1, BatchSize: 2, GradAccum: 1, Seed: 1, Keep: 1}
	for _, c := range []struct {
		name string
		run  func(*RunOptions, *Optimizer)
		want string
	}{
		{"batch size 0", func(r *RunOptions, _ *Optimizer) { r.BatchSize = 0 }, "batch size 0"},
		{"epochs 0", func(r *RunOptions, _ *Optimizer) { r.Epochs = 0 }, "epochs 0"},
		{"max steps -1", func(r *RunOptions, _ *Optimizer) { r.MaxSteps = -1 }, "max steps -1"},
		{"learning rate -1", func(_ *RunOptions, o *Optimizer) { o.LR = -1 }, "learning rate -1"},
		{"clip -1", func(_ *RunOptions, o *Optimizer) { o.ClipNorm = -1 }, "clip -1"},
	} {
		ro, opt := good, DefaultOptimizer()
		c.run(&ro, &opt)
		opt.TotalSteps = ro.TotalSteps(len(data))
		ro.Out = filepath.Join(t.TempDir(), "out")
		_, err := Run(context.Background(), NewTrainer(m, Loss{Kind: PRO, SFTWeight: 0.5}, opt), data, ro)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		if _, err := os.Stat(ro.Out); err == nil {
			t.Errorf("%s: the refused run wrote %s", c.name, ro.Out)
		}
	}
}
