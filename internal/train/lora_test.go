package train

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
)

func logitsOf(t *testing.T, m *model.Model, seqs [][]int) [][][]float32 {
	t.Helper()
	l, err := m.Logits(context.Background(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func maxDiff(a, b [][][]float32) float64 {
	d := 0.0
	for i := range a {
		for j := range a[i] {
			for k := range a[i][j] {
				d = math.Max(d, math.Abs(float64(a[i][j][k]-b[i][j][k])))
			}
		}
	}
	return d
}

func TestLoRA(t *testing.T) {
	ctx := context.Background()
	m := loadTiny(t)
	exs := tinyExamples(m)
	var seqs [][]int
	for _, ex := range exs {
		seqs = append(seqs, append(append([]int(nil), ex.Prompt...), ex.Candidates[0]...))
	}
	base := logitsOf(t, m, seqs)
	before := map[string][]float32{}
	for _, n := range m.TensorNames() {
		before[n] = weightValue(t, m, n)
	}
	if err := m.AddLoRA(model.LoRA{R: 4, Alpha: 8, Dropout: 0.1, Targets: []string{"q", "v", "down"}}, 3); err != nil {
		t.Fatal(err)
	}
	// B starts at zero: the adapted model computes exactly what the base model did.
	if d := maxDiff(base, logitsOf(t, m, seqs)); d != 0 {
		t.Fatalf("zero-init adapters change logits by %g", d)
	}
	opt := DefaultOptimizer()
	opt.LR = 1e-2
	tr := NewTrainer(m, Loss{Kind: RRHF, SFTWeight: 1}, opt)
	if want := 2 * (4*64 + 32*4 + 4*64 + 64*4 + 4*160 + 64*4); tr.NumParams() != want {
		t.Fatalf("trainable parameters %d, want %d (adapters only)", tr.NumParams(), want)
	}
	for i := 0; i < 2; i++ {
		if _, err := tr.Accumulate(ctx, exs); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Apply(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range m.TensorNames() {
		if !slices.Equal(before[n], weightValue(t, m, n)) {
			t.Fatalf("base weight %s changed under LoRA", n)
		}
	}
	// Dropout is live in training graphs: two micro-batches draw different masks.
	s1, err := tr.Accumulate(ctx, exs[:1])
	if err != nil {
		t.Fatal(err)
	}
	s2, err := tr.Accumulate(ctx, exs[:1])
	if err != nil {
		t.Fatal(err)
	}
	if s1.Loss == s2.Loss {
		t.Fatal("LoRA dropout gave the same loss twice")
	}
	tr.Apply()
	adapted := logitsOf(t, m, seqs)
	if maxDiff(base, adapted) < 1e-4 {
		t.Fatal("training the adapters did not change the model")
	}
	dir := t.TempDir()
	if err := m.SaveAdapter(dir); err != nil {
		t.Fatal(err)
	}
	ts, err := hf.ReadSafetensors(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	a := ts["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
	b := ts["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"]
	if a == nil || b == nil || !slices.Equal(a.Shape, []int{4, 64}) || !slices.Equal(b.Shape, []int{64, 4}) || len(ts) != 12 {
		t.Fatalf("PEFT tensors: %d tensors, A %v B %v", len(ts), a, b)
	}
	var cfg map[string]any
	cb, _ := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err := json.Unmarshal(cb, &cfg); err != nil || cfg["peft_type"] != "LORA" || cfg["r"].(float64) != 4 || cfg["lora_alpha"].(float64) != 8 {
		t.Fatalf("adapter_config.json: %s", cb)
	}
	if base, _ := cfg["base_model_name_or_path"].(string); !filepath.IsAbs(base) || filepath.Base(base) != "tiny-llama-metaspace" {
		t.Fatalf("adapter_config.json names base model %q, want the absolute path it was loaded from", base)
	}
	// The saved adapter, loaded onto a fresh base model, reproduces the adapted outputs.
	fresh := loadTiny(t)
	if err := fresh.LoadAdapter(dir, 0); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(adapted, logitsOf(t, fresh, seqs)); d > 1e-5 {
		t.Fatalf("loaded adapter differs by %g", d)
	}
	// Merging folds the adapters into the weights: same outputs, plain checkpoint.
	if err := m.MergeLoRA(); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(adapted, logitsOf(t, m, seqs)); d > 1e-5 {
		t.Fatalf("merged model differs from adapter-on forward by %g", d)
	}
	out := t.TempDir()
	if err := m.Save(out); err != nil {
		t.Fatal(err)
	}
	saved, _ := hf.ReadModelTensors(out)
	for n := range saved {
		if strings.Contains(n, "lora") {
			t.Fatalf("merged checkpoint holds %s", n)
		}
	}
}

func TestLoRABadTargets(t *testing.T) {
	m := loadTiny(t)
	err := m.AddLoRA(model.LoRA{R: 4, Alpha: 8, Targets: []string{"q", "c_attn"}}, 1)
	if err == nil || !strings.Contains(err.Error(), `"c_attn"`) {
		t.Fatalf("unknown target: %v", err)
	}
	b, _ := model.NewBackend()
	g, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.AddLoRA(model.LoRA{R: 4, Alpha: 8, Targets: []string{"q"}}, 1); err == nil || !strings.Contains(err.Error(), "gpt2") {
		t.Fatalf("gpt2: %v", err)
	}
}
