package model

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/cpu"
	"github.com/cyclealign/cyclealign/internal/hf"
)

// The conformance suite: every engine must pass it, on every architecture family. It is the
// contract of the engine interface (engine.go): log-probabilities against references from
// transformers and PyTorch, greedy tokens, KV-cache decoding equal to recomputation, batch
// independence, gradients against finite differences and PyTorch's autograd, and LoRA as an
// adapter equal to LoRA merged.

// engineNames lists the engines the test backend runs.
func engineNames() []string {
	if PureGo(testBackend) {
		return []string{"cpu", "gomlx"}
	}
	return []string{"gomlx"}
}

// families are random models of every described family and variant, with norms and biases
// away from 1 and 0 so that mistakes in them show.
var testFamilies = map[string]map[string]any{
	"llama gqa":      llamaConfig(nil),
	"qwen2 biases":   llamaConfig(map[string]any{"model_type": "qwen2", "tie_word_embeddings": true}),
	"mistral window": llamaConfig(map[string]any{"model_type": "mistral", "sliding_window": 7}),
	"qwen3":          llamaConfig(map[string]any{"model_type": "qwen3", "head_dim": 24}),
	"gpt2": {"model_type": "gpt2", "vocab_size": 300, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64,
		"scale_attn_by_inverse_layer_idx": true},
}

// familyTensors parses a family's config and initialises its weights.
func familyTensors(t *testing.T, raw map[string]any) (*hf.Config, map[string]*hf.Tensor) {
	t.Helper()
	js, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := InitTensors(cfg, 0.05, 7)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, ts
}

// newOn builds a model of the given weights on an engine.
func newOn(t *testing.T, cfg *hf.Config, ts map[string]*hf.Tensor, engine string) *Model {
	t.Helper()
	m, err := New(testBackend, cfg, nil, ts, "random")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetEngine(engine); err != nil {
		t.Fatal(err)
	}
	return m
}

// familyModel builds a random model of a family on an engine.
func familyModel(t *testing.T, raw map[string]any, engine string) *Model {
	t.Helper()
	cfg, ts := familyTensors(t, raw)
	for name, x := range ts {
		if IsNorm(name) || len(name) > 5 && name[len(name)-5:] == ".bias" {
			r := rand.New(rand.NewPCG(1, hashName(name)))
			for i := range x.Data {
				x.Data[i] += float32(r.NormFloat64() * 0.1)
			}
		}
	}
	return newOn(t, cfg, ts, engine)
}

// qwen3Ref is testdata/qwen3/reference.json, written by reference.py with PyTorch.
type qwen3Ref struct {
	Sequences [][]int     `json:"sequences"`
	LogProbs  [][]float64 `json:"logprobs"`
	Greedy    []struct {
		Prompt []int `json:"prompt"`
		Tokens []int `json:"tokens"`
	} `json:"greedy"`
	GradTensors []string             `json:"grad_tensors"`
	Grads       map[string][]float64 `json:"grads"`
}

func loadQwen3Ref(t *testing.T, engine string) (*Model, qwen3Ref) {
	t.Helper()
	dir := filepath.Join("testdata", "qwen3")
	cfg, err := hf.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := hf.ReadModelTensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(testBackend, cfg, nil, ts, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetEngine(engine); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref qwen3Ref
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	return m, ref
}

// greedyTokens decodes n tokens greedily after prompt with the KV cache.
func greedyTokens(t *testing.T, m *Model, prompt []int, n int) []int {
	t.Helper()
	d, err := m.NewDecoder([][]int{prompt}, n, true)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := d.Start()
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for len(out) < n {
		out = append(out, argmax(logits[0]))
		if logits, err = d.Step(out[len(out)-1:]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for _, engine := range engineNames() {
		t.Run(engine, func(t *testing.T) {
			t.Run("log-probs match transformers", func(t *testing.T) {
				for _, name := range refModels {
					m, ref := loadRef(t, name)
					if err := m.SetEngine(engine); err != nil {
						t.Fatal(err)
					}
					var prompts, responses []string
					var seqs [][]int
					for _, p := range ref.Pairs {
						prompts, responses = append(prompts, p.Prompt), append(responses, p.Response)
						seqs = append(seqs, slices.Concat(p.PromptIDs, p.ResponseIDs))
					}
					scores, err := m.ScoreText(ctx, prompts, responses)
					if err != nil {
						t.Fatal(err)
					}
					logits, err := m.Logits(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					for i, p := range ref.Pairs {
						s := scores[i]
						if !slices.Equal(s.PromptIDs, p.PromptIDs) || !slices.Equal(s.ResponseIDs, p.ResponseIDs) {
							t.Fatalf("%s pair %d: ids differ", name, i)
						}
						for j, v := range p.TokenLogProbs {
							if !near(s.TokenLogProbs[j], v, 1e-4) {
								t.Errorf("%s pair %d token %d: logprob %.6f, HF %.6f", name, i, j, s.TokenLogProbs[j], v)
							}
						}
						last := logits[i][len(seqs[i])-1]
						for j, v := range p.LastLogits16 {
							if !near(float64(last[j]), v, 1e-4) {
								t.Errorf("%s pair %d logit %d: %.6f, HF %.6f", name, i, j, last[j], v)
							}
						}
						for pos, want := range p.ArgmaxPerPos {
							if got := argmax(logits[i][pos]); got != want {
								t.Errorf("%s pair %d position %d: argmax %d, HF %d", name, i, pos, got, want)
							}
						}
					}
				}
			})
			t.Run("qwen3 log-probs match PyTorch", func(t *testing.T) {
				m, ref := loadQwen3Ref(t, engine)
				lps, err := m.LogProbs(ctx, ref.Sequences)
				if err != nil {
					t.Fatal(err)
				}
				for i, want := range ref.LogProbs {
					for j, v := range want {
						if !near(float64(lps[i][j]), v, 1e-4) {
							t.Errorf("sequence %d token %d: %.6f, PyTorch %.6f", i, j, lps[i][j], v)
						}
					}
				}
			})
			t.Run("greedy tokens", func(t *testing.T) {
				for _, name := range refModels {
					m, ref := loadRef(t, name)
					if err := m.SetEngine(engine); err != nil {
						t.Fatal(err)
					}
					for i, g := range ref.Generate {
						if got := greedyTokens(t, m, g.PromptIDs, len(g.Greedy16)); !slices.Equal(got, g.Greedy16) {
							t.Errorf("%s prompt %d: %v, transformers %v", name, i, got, g.Greedy16)
						}
					}
				}
				m, ref := loadQwen3Ref(t, engine)
				for i, g := range ref.Greedy {
					if got := greedyTokens(t, m, g.Prompt, len(g.Tokens)); !slices.Equal(got, g.Tokens) {
						t.Errorf("qwen3 prompt %d: %v, PyTorch %v", i, got, g.Tokens)
					}
				}
			})
			t.Run("KV cache equals recomputation", func(t *testing.T) {
				for name, raw := range testFamilies {
					m := familyModel(t, raw, engine)
					prompts := randSeqs(3, 1, 9, 300, 5)
					steps := func(useCache bool) [][]float32 {
						d, err := m.NewDecoder(prompts, 10, useCache)
						if err != nil {
							t.Fatal(err)
						}
						logits, err := d.Start()
						if err != nil {
							t.Fatal(err)
						}
						var all [][]float32
						for step := 0; step < 10; step++ {
							next := make([]int, len(prompts))
							for r, l := range logits {
								all = append(all, append([]float32(nil), l...))
								next[r] = (step*31 + r*7) % 300 // the same tokens for both
							}
							if logits, err = d.Step(next); err != nil {
								t.Fatal(err)
							}
						}
						return all
					}
					cached, full := steps(true), steps(false)
					for i := range cached {
						if d := maxDiff(cached[i], full[i]); d > 1e-4 {
							t.Fatalf("%s: step logits with the cache differ from recomputation by %g", name, d)
						}
					}
				}
			})
			t.Run("a batched row equals the row alone", func(t *testing.T) {
				for name, raw := range testFamilies {
					m := familyModel(t, raw, engine)
					seqs := randSeqs(6, 2, 30, 300, 11)
					batch, err := m.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					for i, s := range seqs {
						alone, err := m.LogProbs(ctx, [][]int{s})
						if err != nil {
							t.Fatal(err)
						}
						if d := maxDiff(batch[i], alone[0]); d > 1e-5 {
							t.Fatalf("%s: row %d in a batch differs from it alone by %g", name, i, d)
						}
					}
				}
			})
			t.Run("gradients match finite differences", func(t *testing.T) {
				for name, raw := range testFamilies {
					m := familyModel(t, raw, engine)
					checkGradients(t, name, m)
				}
				reward := familyModel(t, llamaConfig(map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "num_labels": 1}), engine)
				checkGradients(t, "reward model", reward)
				lora := familyModel(t, testFamilies["qwen3"], engine)
				if err := lora.AddLoRA(LoRA{R: 2, Alpha: 4, Targets: []string{"q", "k", "v", "o", "gate", "up", "down"}}, 3); err != nil {
					t.Fatal(err)
				}
				setAdapters(t, lora)
				checkGradients(t, "qwen3 LoRA", lora)
			})
			t.Run("qwen3 gradients match PyTorch", func(t *testing.T) {
				m, ref := loadQwen3Ref(t, engine)
				_, g := passGradients(t, m, ref.Sequences, func(s, t int) float32 { return 1 })
				for _, n := range ref.GradTensors {
					got, want := g.Base[n], ref.Grads[n]
					for i := range want {
						if !near(float64(got[i]), want[i], 1e-4+1e-3*math.Abs(want[i])) {
							t.Fatalf("%s[%d]: gradient %.6f, PyTorch %.6f", n, i, got[i], want[i])
						}
					}
				}
			})
			t.Run("a bf16 checkpoint computes as its float32 widening, within bf16 rounding", func(t *testing.T) {
				// A kernel that widens bf16 weights computes exactly what float32 does on them;
				// one that multiplies bf16 pairs (AVX-512 BF16) rounds the activations to bf16
				// too, which moves log-probabilities by a few bf16 steps (2⁻⁸ relative) at most.
				tol, gradTol := 1e-6, 1e-6
				pairs := engine == "cpu" && !cpu.ExactBF16()
				if pairs {
					tol, gradTol = 1e-2, 2e-2
				}
				for name, raw := range testFamilies {
					cfg, ts := familyTensors(t, raw)
					half := map[string]*hf.Tensor{}
					for n, x := range ts { // values a bf16 checkpoint can hold, stored as bf16 or as float32
						for i, v := range x.Data {
							x.Data[i] = math.Float32frombits(math.Float32bits(v) &^ 0xffff)
						}
						half[n] = &hf.Tensor{Shape: x.Shape, Stored: hf.BF16, Data: x.Data}
					}
					build := func(ts map[string]*hf.Tensor) *Model { return newOn(t, cfg, ts, engine) }
					hm, fm := build(half), build(ts)
					seqs := randSeqs(4, 2, 20, 300, 19)
					a, err := hm.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := fm.LogProbs(ctx, seqs)
					worst := 0.0
					for i := range seqs {
						worst = max(worst, maxDiff(a[i], b[i]))
					}
					if worst > tol || pairs && worst == 0 {
						t.Fatalf("%s: bf16 weights differ from their float32 widening by %g (at most %g, and not 0 when products are of bf16 pairs)", name, worst, tol)
					}
					t.Logf("%s: log-probabilities within %.2g of the float32 widening's", name, worst)
					for _, n := range hm.names {
						if dt := hm.Variable(n).DType(); dt != dtypes.BFloat16 {
							t.Fatalf("%s: %s kept as %s", name, n, dt)
						}
					}
					if e, ok := hm.eng.(*cpuEngine); ok {
						lm, err := e.packed()
						if err != nil {
							t.Fatal(err)
						}
						for _, p := range []*cpu.Packed{lm.head, lm.layers[0].qkv, lm.layers[1].down} {
							if !p.BF16() && !strings.HasPrefix(name, "gpt2") {
								t.Fatalf("%s: a matrix of the bf16 checkpoint is packed in float32", name)
							}
						}
					}
					// LoRA trains on the bf16 base as on its widening.
					if hm.desc.loraTargets != nil {
						lh, lf := build(half), build(ts)
						for _, lm := range []*Model{lh, lf} {
							if err := lm.AddLoRA(LoRA{R: 2, Alpha: 4, Targets: []string{"q", "v", "down"}}, 3); err != nil {
								t.Fatal(err)
							}
							setAdapters(t, lm)
						}
						w := func(s, i int) float32 { return float32(math.Cos(float64(s + i))) }
						la, ga := passGradients(t, lh, seqs, w)
						lb, gb := passGradients(t, lf, seqs, w)
						if math.Abs(la-lb) > tol*math.Abs(lb) {
							t.Fatalf("%s: LoRA loss on the bf16 base %v, on its widening %v", name, la, lb)
						}
						for n, g := range gb.LoRA {
							if d := maxDiff(ga.LoRA[n], g); d > gradTol*max(1e-3, maxAbs(g)) {
								t.Fatalf("%s: LoRA gradient of %s differs by %g on the bf16 base (largest %g)", name, n, d, maxAbs(g))
							}
						}
					}
					// Training widens what it trains to float32 masters, exactly.
					tr := hm.Trainable()
					if len(tr) != len(hm.names) || tr[0].DType() != dtypes.Float32 {
						t.Fatalf("%s: training sees %d tensors of %s", name, len(tr), tr[0].DType())
					}
					c, _ := hm.LogProbs(ctx, seqs)
					for i := range seqs {
						if d := maxDiff(c[i], b[i]); d > 1e-6 {
							t.Fatalf("%s: widened for training, the model differs by %g", name, d)
						}
					}
				}
			})
			t.Run("LoRA as an adapter equals LoRA merged", func(t *testing.T) {
				for _, name := range []string{"llama gqa", "qwen3"} {
					m := familyModel(t, testFamilies[name], engine)
					if err := m.AddLoRA(LoRA{R: 4, Alpha: 8, Targets: []string{"q", "v", "down"}}, 5); err != nil {
						t.Fatal(err)
					}
					setAdapters(t, m)
					seqs := randSeqs(3, 2, 20, 300, 13)
					adapted, err := m.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					dir := t.TempDir()
					if err := m.SaveAdapter(dir); err != nil {
						t.Fatal(err)
					}
					fresh := familyModel(t, testFamilies[name], engine)
					base, err := fresh.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					shared, err := fresh.WithAdapter(dir, 0)
					if err != nil {
						t.Fatal(err)
					}
					loaded, err := shared.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					if err := m.MergeLoRA(); err != nil {
						t.Fatal(err)
					}
					merged, err := m.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					for i := range seqs {
						if maxDiff(adapted[i], base[i]) < 1e-3 {
							t.Fatalf("%s: the adapters change nothing", name)
						}
						if d := maxDiff(adapted[i], merged[i]); d > 1e-4 {
							t.Fatalf("%s sequence %d: merged differs from the adapter by %g", name, i, d)
						}
						if d := maxDiff(adapted[i], loaded[i]); d > 1e-5 {
							t.Fatalf("%s sequence %d: the saved adapter on a shared base differs by %g", name, i, d)
						}
					}
				}
			})
		})
	}
}

// setAdapters gives every adapter a non-zero B, so that it changes the model.
func setAdapters(t *testing.T, m *Model) {
	t.Helper()
	for mod := range m.lora.modules {
		v := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_B.weight")
		b := make([]float32, v.Shape().Size())
		for i := range b {
			b[i] = 0.2 * float32(math.Sin(float64(i)+float64(hashName(mod)%7)))
		}
		v.MustSetValue(tensors.FromFlatDataAndDimensions(b, v.Shape().Dimensions...))
	}
}

// passLoss runs a training pass over seqs and returns L = Σ w(s,t)·out[s][t] (in float64), the
// pass and dL/d(out).
func passLoss(t *testing.T, m *Model, seqs [][]int, w func(s, t int) float32) (float64, TrainPass, [][]float32) {
	t.Helper()
	pass, outs, err := m.TrainForward(seqs, Dropout{})
	if err != nil {
		t.Fatal(err)
	}
	d := make([][]float32, len(outs))
	loss := 0.0
	for s, o := range outs {
		d[s] = make([]float32, len(o))
		for i, v := range o {
			d[s][i] = w(s, i)
			loss += float64(d[s][i]) * float64(v)
		}
	}
	return loss, pass, d
}

// passGradients is passLoss with the backward pass: L and its gradients.
func passGradients(t *testing.T, m *Model, seqs [][]int, w func(s, t int) float32) (float64, *Grads) {
	t.Helper()
	loss, pass, d := passLoss(t, m, seqs, w)
	g := m.NewGrads()
	if err := pass.Backward(d, g); err != nil {
		t.Fatal(err)
	}
	return loss, g
}

// checkGradients compares, for every trainable tensor, the gradient entry of largest magnitude
// (where float32 differences are reliable) with a central difference of the loss.
func checkGradients(t *testing.T, name string, m *Model) {
	t.Helper()
	seqs := randSeqs(3, 3, 12, 300, 17)
	weight := func(s, i int) float32 { return float32(math.Cos(float64(3*s + i))) }
	_, g := passGradients(t, m, seqs, weight)
	for _, v := range m.Trainable() {
		grad := g.Of(v)
		best := 0
		for i := range grad {
			if math.Abs(float64(grad[i])) > math.Abs(float64(grad[best])) {
				best = i
			}
		}
		orig := tensors.MustCopyFlatData[float32](v.MustValue())
		const eps = 1e-2
		loss := func(delta float32) float64 {
			w := slices.Clone(orig)
			w[best] += delta
			v.MustSetValue(tensors.FromFlatDataAndDimensions(w, v.Shape().Dimensions...))
			l, _, _ := passLoss(t, m, seqs, weight)
			return l
		}
		fd := (loss(eps) - loss(-eps)) / (2 * eps)
		v.MustSetValue(tensors.FromFlatDataAndDimensions(orig, v.Shape().Dimensions...))
		if gv := float64(grad[best]); math.Abs(fd-gv) > 0.02*math.Abs(gv)+2e-3 {
			t.Errorf("%s: %s[%d]: gradient %.6f, finite difference %.6f", name, v.Name(), best, gv, fd)
		}
	}
}
