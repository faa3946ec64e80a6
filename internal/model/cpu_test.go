package model

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// randomModel builds a random model on the CPU engine.
func randomModel(t *testing.T, raw map[string]any) *Model {
	t.Helper()
	if !PureGo(testBackend) {
		t.Fatal("the CPU engine needs the pure-Go backend")
	}
	return familyModel(t, raw, "cpu")
}

func llamaConfig(extra map[string]any) map[string]any {
	raw := map[string]any{"model_type": "llama", "architectures": []string{"LlamaForCausalLM"}, "vocab_size": 300,
		"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
		"max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false}
	for k, v := range extra {
		raw[k] = v
	}
	return raw
}

func randSeqs(n, minLen, maxLen, vocab int, seed uint64) [][]int {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([][]int, n)
	for i := range out {
		out[i] = make([]int, minLen+r.IntN(maxLen-minLen+1))
		for j := range out[i] {
			out[i][j] = r.IntN(vocab)
		}
	}
	return out
}

// withEngine runs fn with the model switched to an engine, then back to the CPU path.
func withEngine(t *testing.T, m *Model, engine string, fn func()) {
	t.Helper()
	if err := m.SetEngine(engine); err != nil {
		t.Fatal(err)
	}
	defer m.SetEngine("cpu")
	fn()
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func maxAbs(a []float32) float64 {
	m := 0.0
	for _, v := range a {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return m
}

// TestEnginesAgree compares the own CPU path with the GoMLX graphs on every architecture
// variant: log-probs and logits within 1e-5, and the same greedy continuation token by token.
func TestEnginesAgree(t *testing.T) {
	if !PureGo(testBackend) {
		t.Skipf("compares the cpu engine with graphs; the cpu engine needs the pure-Go backend, not %s", testBackend.Name())
	}
	cases := map[string]map[string]any{
		"llama gqa":      llamaConfig(nil),
		"qwen2 biases":   llamaConfig(map[string]any{"model_type": "qwen2", "tie_word_embeddings": true}),
		"mistral window": llamaConfig(map[string]any{"model_type": "mistral", "sliding_window": 7}),
		"llama3 rope":    llamaConfig(map[string]any{"rope_theta": 500000.0, "rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
		"reward model":   llamaConfig(map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "num_labels": 1}),
		"qwen3 qk-norm":  llamaConfig(map[string]any{"model_type": "qwen3", "head_dim": 24}),
		"gpt2": {"model_type": "gpt2", "vocab_size": 300, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64,
			"scale_attn_by_inverse_layer_idx": true},
	}
	ctx := context.Background()
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			m := randomModel(t, raw)
			seqs := randSeqs(5, 2, 30, 300, 3)
			if m.Config.NumLabels > 0 {
				fast, err := m.Logits(ctx, seqs)
				if err != nil {
					t.Fatal(err)
				}
				withEngine(t, m, "gomlx", func() {
					slow, err := m.Logits(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					for i := range seqs {
						for j := range seqs[i] {
							if d := maxDiff(fast[i][j], slow[i][j]); d > 1e-5 {
								t.Fatalf("seq %d pos %d: logits differ by %g", i, j, d)
							}
						}
					}
				})
				return
			}
			fast, err := m.LogProbs(ctx, seqs)
			if err != nil {
				t.Fatal(err)
			}
			withEngine(t, m, "gomlx", func() {
				slow, err := m.LogProbs(ctx, seqs)
				if err != nil {
					t.Fatal(err)
				}
				for i := range seqs {
					if d := maxDiff(fast[i], slow[i]); d > 1e-5 {
						t.Fatalf("seq %d: log-probs differ by %g", i, d)
					}
				}
			})
			prompts := randSeqs(4, 1, 9, 300, 5)
			greedy := func() ([][]int, [][]float32) {
				d, err := m.NewDecoder(prompts, 12, true)
				if err != nil {
					t.Fatal(err)
				}
				logits, err := d.Start()
				if err != nil {
					t.Fatal(err)
				}
				out := make([][]int, len(prompts))
				var all [][]float32
				for step := 0; step < 12; step++ {
					next := make([]int, len(prompts))
					for r, l := range logits {
						all = append(all, append([]float32(nil), l...))
						for i, v := range l {
							if v > l[next[r]] {
								next[r] = i
							}
						}
						out[r] = append(out[r], next[r])
					}
					if logits, err = d.Step(next); err != nil {
						t.Fatal(err)
					}
				}
				return out, all
			}
			ft, fl := greedy()
			withEngine(t, m, "gomlx", func() {
				st, sl := greedy()
				for r := range ft {
					for i := range ft[r] {
						if ft[r][i] != st[r][i] {
							t.Fatalf("row %d: greedy tokens %v (cpu) vs %v (gomlx)", r, ft[r], st[r])
						}
					}
				}
				for i := range fl {
					if d := maxDiff(fl[i], sl[i]); d > 1e-4 {
						t.Fatalf("decoding step logits differ by %g", d)
					}
				}
			})
		})
	}
}

// TestFastPathFollowsWeights: after a weight changes (as a training step changes it) or an
// adapter is attached, the CPU path computes with the new weights, as the graphs do.
func TestFastPathFollowsWeights(t *testing.T) {
	if !PureGo(testBackend) {
		t.Skipf("compares the cpu engine with graphs; the cpu engine needs the pure-Go backend, not %s", testBackend.Name())
	}
	m := randomModel(t, llamaConfig(nil))
	ctx := context.Background()
	seqs := randSeqs(3, 4, 12, 300, 9)
	before, _ := m.LogProbs(ctx, seqs)
	v := m.Variable("model.layers.0.mlp.up_proj.weight")
	w := tensors.MustCopyFlatData[float32](v.MustValue())
	for i := range w {
		w[i] *= 3
	}
	v.MustSetValue(tensors.FromFlatDataAndDimensions(w, v.Shape().Dimensions...))
	if err := m.AddLoRA(LoRA{R: 2, Alpha: 4, Targets: []string{"q", "down"}}, 1); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"model.layers.1.self_attn.q_proj", "model.layers.0.mlp.down_proj"} {
		bv := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_B.weight")
		b := make([]float32, bv.Shape().Size())
		for i := range b {
			b[i] = 0.3 * float32(i%5-2)
		}
		bv.MustSetValue(tensors.FromFlatDataAndDimensions(b, bv.Shape().Dimensions...))
	}
	after, _ := m.LogProbs(ctx, seqs)
	if maxDiff(before[0], after[0]) < 1e-3 {
		t.Fatal("the CPU path still computes with the old weights")
	}
	withEngine(t, m, "gomlx", func() {
		slow, _ := m.LogProbs(ctx, seqs)
		for i := range seqs {
			if d := maxDiff(after[i], slow[i]); d > 1e-5 {
				t.Fatalf("seq %d: after the change the engines differ by %g", i, d)
			}
		}
	})
}

// TestTrainingHeadInChunks: a training pass whose logits do not fit in one chunk computes
// them again chunk by chunk in the backward pass, and gets what the pass holding them all
// gets: the same outputs and input-side gradients (LoRA's) bit for bit, and the head's own
// weight gradient (summed chunk by chunk) within float32 rounding.
func TestTrainingHeadInChunks(t *testing.T) {
	if !PureGo(testBackend) {
		t.Skip("the chunked head is the cpu engine's")
	}
	seqs := randSeqs(3, 9, 20, 300, 23)
	weight := func(s, i int) float32 { return float32(math.Sin(float64(2*s + i))) }
	for _, lora := range []bool{true, false} {
		run := func(floats int) (float64, *Grads) {
			defer func(old int) { headFloats = old }(headFloats)
			headFloats = floats
			m := familyModel(t, testFamilies["qwen2 biases"], "cpu")
			if lora {
				if err := m.AddLoRA(LoRA{R: 2, Alpha: 4, Targets: []string{"q", "v", "down"}}, 3); err != nil {
					t.Fatal(err)
				}
				setAdapters(t, m)
			}
			return passGradients(t, m, seqs, weight)
		}
		whole, gw := run(1 << 30)
		chunked, gc := run(16 * 300) // 16 rows of a 300-word vocabulary: four chunks or more
		if whole != chunked {
			t.Fatalf("lora=%v: loss %v in chunks, %v whole", lora, chunked, whole)
		}
		for _, pair := range [][2]map[string][]float32{{gw.LoRA, gc.LoRA}, {gw.Base, gc.Base}} {
			for n, g := range pair[0] {
				tol := 0.0
				if n == "model.embed_tokens.weight" { // the tied head's gradient, summed by chunk
					tol = 1e-5 * max(1e-3, maxAbs(g))
				}
				if d := maxDiff(pair[1][n], g); d > tol {
					t.Fatalf("lora=%v: %s differs by %g in chunks", lora, n, d)
				}
			}
		}
	}
}

// TestRecomputeGradients: with Model.Recompute the CPU engine keeps only each layer's input
// and runs the layer again in the backward pass; outputs and every gradient are bit for bit
// those of the pass that kept everything, on every family, with LoRA and its dropout too.
func TestRecomputeGradients(t *testing.T) {
	if !PureGo(testBackend) {
		t.Skip("recomputation is the cpu engine's")
	}
	seqs := randSeqs(3, 5, 14, 300, 29)
	for name, raw := range testFamilies {
		for _, lora := range []bool{false, true} {
			run := func(recompute bool) ([][]float32, *Grads) {
				m := familyModel(t, raw, "cpu")
				if lora {
					if m.desc.loraTargets == nil {
						return nil, nil
					}
					if err := m.AddLoRA(LoRA{R: 2, Alpha: 4, Dropout: 0.3, Targets: []string{"q", "v", "down"}}, 3); err != nil {
						t.Fatal(err)
					}
					setAdapters(t, m)
				}
				m.Recompute = recompute
				pass, outs, err := m.TrainForward(seqs, Dropout{Rate: 0.3, Seed: 11})
				if err != nil {
					t.Fatal(err)
				}
				d := make([][]float32, len(outs))
				for s, o := range outs {
					d[s] = make([]float32, len(o))
					for i := range o {
						d[s][i] = float32(math.Cos(float64(s*7 + i)))
					}
				}
				g := m.NewGrads()
				if err := pass.Backward(d, g); err != nil {
					t.Fatal(err)
				}
				return outs, g
			}
			kept, gk := run(false)
			again, ga := run(true)
			if gk == nil {
				continue
			}
			for s := range kept {
				if !slices.Equal(kept[s], again[s]) {
					t.Fatalf("%s lora=%v: outputs differ with recomputation", name, lora)
				}
			}
			for _, pair := range [][2]map[string][]float32{{gk.Base, ga.Base}, {gk.LoRA, ga.LoRA}} {
				if len(pair[0]) == 0 && len(pair[1]) == 0 {
					continue
				}
				for n, g := range pair[0] {
					if !slices.Equal(g, pair[1][n]) {
						t.Fatalf("%s lora=%v: gradient of %s differs with recomputation by %g", name, lora, n, maxDiff(g, pair[1][n]))
					}
				}
			}
		}
	}
}
