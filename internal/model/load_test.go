package model

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// writeDir writes a model directory from a config map and tensors, with the llama reference
// tokenizer.
func writeDir(t *testing.T, cfg map[string]any, ts map[string]*hf.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(refDir("tiny-llama-metaspace"), "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tok, 0o644); err != nil {
		t.Fatal(err)
	}
	if ts != nil {
		if err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func qwen2Config() map[string]any {
	return map[string]any{
		"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "vocab_size": 600,
		"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6,
		"num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
		"rope_theta": 1000000.0, "tie_word_embeddings": true, "hidden_act": "silu", "dtype": "bfloat16",
		"bos_token_id": 1, "eos_token_id": 2,
	}
}

func initDir(t *testing.T, cfgMap map[string]any, seed uint64) (string, map[string]*hf.Tensor) {
	t.Helper()
	b, _ := json.Marshal(cfgMap)
	cfg, err := hf.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := InitTensors(cfg, 0.2, seed)
	if err != nil {
		t.Fatal(err)
	}
	// Non-zero biases, so the test sees whether they are applied.
	for n, x := range ts {
		if strings.HasSuffix(n, ".bias") {
			for i := range x.Data {
				x.Data[i] = 0.05 * float32(i%7-3)
			}
		}
	}
	return writeDir(t, cfgMap, ts), ts
}

// TestQwen2TiedWithBiases loads a Qwen2-style checkpoint of our own (q/k/v biases, tied
// embeddings, bf16, GQA) and checks what can be checked without a reference.
func TestQwen2TiedWithBiases(t *testing.T) {
	dir, ts := initDir(t, qwen2Config(), 1)
	if _, ok := ts["lm_head.weight"]; ok {
		t.Fatal("tied model must not have lm_head.weight")
	}
	for _, n := range []string{"model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.v_proj.bias"} {
		if _, ok := ts[n]; !ok {
			t.Fatalf("qwen2 needs %s", n)
		}
	}
	if _, ok := ts["model.layers.0.self_attn.o_proj.bias"]; ok {
		t.Fatal("qwen2 has no o_proj bias")
	}
	m, err := Load(testBackend, dir)
	if err != nil {
		t.Fatal(err)
	}
	seq := m.Tokenizer.Encode("Hello there, how are you?", true)
	ctx := context.Background()
	logits, err := m.Logits(ctx, [][]int{seq})
	if err != nil {
		t.Fatal(err)
	}
	if len(logits[0]) != len(seq) || len(logits[0][0]) != 600 {
		t.Fatalf("logits shape [%d][%d], want [%d][600]", len(logits[0]), len(logits[0][0]), len(seq))
	}
	// Tied head: scaling the embedding matrix by 2 must change the logits (the head reads it).
	emb := ts["model.embed_tokens.weight"]
	for i := range emb.Data {
		emb.Data[i] *= 2
	}
	m2, err := New(testBackend, m.Config, m.Tokenizer, ts, "scaled")
	if err != nil {
		t.Fatal(err)
	}
	logits2, _ := m2.Logits(ctx, [][]int{seq})
	if logits2[0][0][5] == logits[0][0][5] {
		t.Fatal("logits ignore the tied embedding")
	}
	// The q bias is applied: zeroing it changes the output.
	for i := range emb.Data {
		emb.Data[i] /= 2
	}
	qb := ts["model.layers.1.self_attn.q_proj.bias"]
	for i := range qb.Data {
		qb.Data[i] = 0
	}
	m3, err := New(testBackend, m.Config, m.Tokenizer, ts, "nobias")
	if err != nil {
		t.Fatal(err)
	}
	logits3, _ := m3.Logits(ctx, [][]int{seq})
	if logits3[0][3][5] == logits[0][3][5] {
		t.Fatal("q_proj.bias has no effect")
	}
}

// TestSaveLoadBitIdentical: load -> save -> load gives the same bytes and values, for the two
// float32 references and the bf16 Qwen2 model.
func TestSaveLoadBitIdentical(t *testing.T) {
	qdir, _ := initDir(t, qwen2Config(), 2)
	for _, dir := range []string{refDir("tiny-gpt2-bytelevel"), refDir("tiny-llama-metaspace"), qdir} {
		m, err := Load(testBackend, dir)
		if err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		if err := m.Save(out); err != nil {
			t.Fatal(err)
		}
		orig, err := hf.ReadModelTensors(dir)
		if err != nil {
			t.Fatal(err)
		}
		saved, err := hf.ReadModelTensors(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(orig) != len(saved) {
			t.Fatalf("%s: %d tensors saved, %d loaded", dir, len(saved), len(orig))
		}
		for n, a := range orig {
			b := saved[n]
			if b == nil || a.Stored != b.Stored || !slices.Equal(a.Shape, b.Shape) {
				t.Fatalf("%s: tensor %s differs in dtype or shape", dir, n)
			}
			for i := range a.Data {
				if a.Data[i] != b.Data[i] {
					t.Fatalf("%s: tensor %s element %d: %v != %v", dir, n, i, a.Data[i], b.Data[i])
				}
			}
		}
		m2, err := Load(testBackend, out)
		if err != nil {
			t.Fatal(err)
		}
		out2 := t.TempDir()
		if err := m2.Save(out2); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"model.safetensors", "config.json", "tokenizer.json"} {
			a, _ := os.ReadFile(filepath.Join(out, f))
			b, _ := os.ReadFile(filepath.Join(out2, f))
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Fatalf("%s: second save of %s is not byte-identical", dir, f)
			}
		}
		tokA, _ := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
		tokB, _ := os.ReadFile(filepath.Join(out, "tokenizer.json"))
		if !bytes.Equal(tokA, tokB) {
			t.Fatalf("%s: tokenizer.json changed on save", dir)
		}
	}
}

// TestSaveAsDType: a bf16 checkpoint saved as float32 keeps an update smaller than a bf16 step
// (and reloads to the weights in memory, with config.json saying float32); saved as loaded,
// that update rounds away; an unknown dtype is refused by name.
func TestSaveAsDType(t *testing.T) {
	dir, _ := initDir(t, qwen2Config(), 3)
	m, err := Load(testBackend, dir)
	if err != nil {
		t.Fatal(err)
	}
	const name = "model.norm.weight"
	v := m.Variable(name)
	w, _ := floatData(v.MustValue())
	w[0] += w[0] / 1024 // under bf16's 8 bits of mantissa
	v.MustSetValue(tensors.FromFlatDataAndDimensions(w, v.Shape().Dimensions...))
	f32, bf := t.TempDir(), t.TempDir()
	if err := m.SaveAs(f32, "float32"); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(bf); err != nil {
		t.Fatal(err)
	}
	got, err := hf.ReadModelTensors(f32)
	if err != nil {
		t.Fatal(err)
	}
	for n, x := range got {
		if x.Stored != hf.F32 {
			t.Fatalf("%s saved as %s, want F32", n, x.Stored)
		}
	}
	if got[name].Data[0] != w[0] {
		t.Fatalf("float32 save: %v, want the weight in memory %v", got[name].Data[0], w[0])
	}
	m2, err := Load(testBackend, f32)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Config.DType != "float32" || m.Config.DType != "bfloat16" {
		t.Fatalf("config dtype: saved %q (want float32), the model's own %q (want bfloat16 still)", m2.Config.DType, m.Config.DType)
	}
	half, err := hf.ReadModelTensors(bf)
	if err != nil {
		t.Fatal(err)
	}
	if half[name].Stored != hf.BF16 || half[name].Data[0] == w[0] {
		t.Fatalf("saved as loaded: %s %v, want BF16 with the small update rounded away from %v", half[name].Stored, half[name].Data[0], w[0])
	}
	if err := m.SaveAs(t.TempDir(), "fp8"); err == nil || !strings.Contains(err.Error(), "fp8") {
		t.Fatalf("unknown dtype: %v, want an error naming it", err)
	}
}

func TestShardedCheckpoint(t *testing.T) {
	src := refDir("tiny-llama-metaspace")
	ts, err := hf.ReadModelTensors(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(src, "config.json"))
	var cfgMap map[string]any
	json.Unmarshal(cfg, &cfgMap)
	dir := writeDir(t, cfgMap, nil)
	shards := []map[string]*hf.Tensor{{}, {}}
	index := map[string]string{}
	for i, n := range sortedKeys(ts) {
		shards[i%2][n] = ts[n]
		index[n] = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i%2]
	}
	for i, s := range shards {
		name := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i]
		if err := hf.WriteSafetensors(filepath.Join(dir, name), s, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": index})
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644)
	m, err := Load(testBackend, dir)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Load(testBackend, src)
	if err != nil {
		t.Fatal(err)
	}
	seq := ref.Tokenizer.Encode("sharded weights", true)
	a, _ := m.Logits(context.Background(), [][]int{seq})
	r, _ := ref.Logits(context.Background(), [][]int{seq})
	if a[0][1][7] != r[0][1][7] {
		t.Fatal("sharded load differs from single-file load")
	}
}

func TestBadCheckpoints(t *testing.T) {
	llamaCfg := func() map[string]any {
		b, _ := os.ReadFile(filepath.Join(refDir("tiny-llama-metaspace"), "config.json"))
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	good, err := hf.ReadModelTensors(refDir("tiny-llama-metaspace"))
	if err != nil {
		t.Fatal(err)
	}
	without := func(name string) map[string]*hf.Tensor {
		out := map[string]*hf.Tensor{}
		for n, x := range good {
			if n != name {
				out[n] = x
			}
		}
		return out
	}
	cases := []struct {
		name string
		cfg  func(map[string]any)
		ts   map[string]*hf.Tensor
		want []string
	}{
		{"model type", func(c map[string]any) { c["model_type"] = "falcon" }, good, []string{"model_type", "falcon"}},
		{"rope type", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"rope_theta": 10000.0, "rope_type": "yarn"}
		}, good, []string{"rope_parameters.rope_type", "yarn"}},
		{"dtype", func(c map[string]any) { c["dtype"] = "int8" }, good, []string{"dtype", "int8"}},
		{"activation", func(c map[string]any) { c["hidden_act"] = "relu" }, good, []string{"hidden_act", "relu"}},
		{"missing tensor", nil, without("model.layers.1.mlp.up_proj.weight"), []string{"model.layers.1.mlp.up_proj.weight", "missing"}},
		{"shape", func(c map[string]any) { c["intermediate_size"] = 128.0 }, good, []string{"model.layers.0.mlp.down_proj.weight", "[64 160]", "[64 128]"}},
		{"gqa", func(c map[string]any) { c["num_key_value_heads"] = 3.0 }, good, []string{"num_key_value_heads"}},
		{"missing field", func(c map[string]any) { delete(c, "hidden_size") }, good, []string{"hidden_size", "missing"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := llamaCfg()
			if c.cfg != nil {
				c.cfg(cfg)
			}
			dir := writeDir(t, cfg, c.ts)
			_, err := Load(testBackend, dir)
			if err == nil {
				t.Fatal("loaded a bad checkpoint")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		dir := writeDir(t, llamaCfg(), good)
		p := filepath.Join(dir, "model.safetensors")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)-100], 0o644)
		_, err := Load(testBackend, dir)
		if err == nil || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), "model.safetensors") {
			t.Fatalf("truncated file: got %v", err)
		}
	})
}

func TestFitContext(t *testing.T) {
	p := []int{1, 2, 3, 4, 5, 6, 7, 8}
	r := []int{10, 11, 12, 13, 14, 15}
	if gp, gr := FitContext(p, r, 20); len(gp) != 8 || len(gr) != 6 {
		t.Fatal("a fitting pair was changed")
	}
	gp, gr := FitContext(p, r, 10)
	if len(gp)+len(gr) != 10 || gp[0] != 1 || gp[len(gp)-1] != 8 || len(gr) != 5 || gr[0] != 10 {
		t.Fatalf("fit to 10: %v %v", gp, gr)
	}
	gp, gr = FitContext(p, nil, 4)
	if !slices.Equal(gp, []int{1, 6, 7, 8}) || len(gr) != 0 {
		t.Fatalf("prompt alone to 4: %v", gp)
	}
}
