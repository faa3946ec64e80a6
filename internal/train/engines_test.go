package train

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
)

// randomPair builds two models with the same random weights: one on the CPU engine, one on
// the GoMLX graphs.
func randomPair(t *testing.T, extra map[string]any, lora *model.LoRA) (fast, graph *model.Model) {
	t.Helper()
	raw := map[string]any{"model_type": "llama", "architectures": []string{"LlamaForCausalLM"}, "vocab_size": 200,
		"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
		"max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": false}
	for k, v := range extra {
		raw[k] = v
	}
	js, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := model.InitTensors(cfg, 0.1, 3)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(4, 4))
	for name, x := range ts { // norms and biases away from 1 and 0, so their gradients matter
		if model.IsNorm(name) || name[len(name)-5:] == ".bias" {
			for i := range x.Data {
				x.Data[i] += float32(r.NormFloat64() * 0.2)
			}
		}
	}
	b, err := model.NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	if !model.PureGo(b) {
		t.Skipf("compares the cpu engine with graphs; the cpu engine needs the pure-Go backend, not %s", b.Name())
	}
	build := func(engine string) *model.Model {
		m, err := model.New(b, cfg, nil, ts, "random")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetEngine(engine); err != nil {
			t.Fatal(err)
		}
		if lora != nil {
			if err := m.AddLoRA(*lora, 9); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj"} {
				v := m.Ctx.GetVariableByScopeAndName(model.LoRAScope, n+".lora_B.weight")
				bv := make([]float32, v.Shape().Size())
				for i := range bv {
					bv[i] = float32(math.Sin(float64(i))) * 0.3
				}
				v.MustSetValue(tensors.FromFlatDataAndDimensions(bv, v.Shape().Dimensions...))
			}
		}
		return m
	}
	return build("cpu"), build("gomlx")
}

func randomExamples(n, cands, vocab int) []Example {
	r := rand.New(rand.NewPCG(7, 7))
	ids := func(k int) []int {
		out := make([]int, k)
		for i := range out {
			out[i] = r.IntN(vocab)
		}
		return out
	}
	var exs []Example
	for e := 0; e < n; e++ {
		ex := Example{Prompt: ids(3 + r.IntN(6))}
		for c := 0; c < cands; c++ {
			ex.Candidates = append(ex.Candidates, ids(2+r.IntN(9)))
		}
		exs = append(exs, ex)
	}
	return exs
}

// TestEnginesTrainAlike: on every LLaMA-family variant, loss and LoRA, the trainer's loss,
// scores and accumulated gradients on the CPU engine equal those on the GoMLX graphs (each
// checked against finite differences by the conformance suite), and so does the gradient norm
// of the step.
func TestEnginesTrainAlike(t *testing.T) {
	lora := &model.LoRA{R: 2, Alpha: 4, Targets: []string{"q", "v", "up", "down"}}
	cases := []struct {
		name  string
		extra map[string]any
		lora  *model.LoRA
		kinds []LossKind
	}{
		{"llama", nil, nil, []LossKind{PRO, RRHF, SFT}},
		{"qwen2 tied", map[string]any{"model_type": "qwen2", "tie_word_embeddings": true, "mlp_bias": true}, nil, []LossKind{PRO}},
		{"mistral window", map[string]any{"model_type": "mistral", "sliding_window": 5}, nil, []LossKind{PRO}},
		{"reward model", map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "num_labels": 1}, nil, []LossKind{BT}},
		{"lora", nil, lora, []LossKind{PRO, RRHF}},
		{"sft sum", nil, nil, []LossKind{PRO, SFT}},
		{"pro temperature", nil, nil, []LossKind{PRO}},
	}
	ctx := context.Background()
	for _, c := range cases {
		for _, kind := range c.kinds {
			t.Run(fmt.Sprintf("%s %s", c.name, kind), func(t *testing.T) {
				fm, gm := randomPair(t, c.extra, c.lora)
				cands := 3
				if kind == BT {
					cands = 2
				}
				exs := randomExamples(3, cands, 200)
				l := Loss{Kind: kind, SFTWeight: DefaultSFTWeight(kind), SFTSum: c.name == "sft sum", PROTemperature: c.name == "pro temperature"}
				if l.PROTemperature {
					for e := range exs {
						exs[e].Rewards = []float64{2, 0.5 + float64(e), -1}
					}
				}
				opt := DefaultOptimizer()
				opt.LR = 1e-3
				tf, tg := NewTrainer(fm, l, opt), NewTrainer(gm, l, opt)
				if fm.Engine() != "cpu" || gm.Engine() != "gomlx" {
					t.Fatalf("engines: %s and %s", fm.Engine(), gm.Engine())
				}
				seqs := [][]int{append(append([]int(nil), exs[0].Prompt...), exs[0].Candidates[0]...)}
				if fm.Config.NumLabels == 0 {
					fm.LogProbs(ctx, seqs) // packs the weights before the step: the step must invalidate it
				}
				sf, err := tf.Accumulate(ctx, exs)
				if err != nil {
					t.Fatal(err)
				}
				sg, err := tg.Accumulate(ctx, exs)
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(sf.Loss-sg.Loss) > 1e-4*(1+math.Abs(sg.Loss)) {
					t.Fatalf("loss: own %v, graphs %v", sf.Loss, sg.Loss)
				}
				for e := range sf.Scores {
					for k := range sf.Scores[e] {
						if math.Abs(sf.Scores[e][k]-sg.Scores[e][k]) > 1e-5 {
							t.Fatalf("example %d score %d: own %v, graphs %v", e, k, sf.Scores[e][k], sg.Scores[e][k])
						}
					}
				}
				if len(tf.params) != len(tg.params) {
					t.Fatalf("%d vs %d trainable tensors", len(tf.params), len(tg.params))
				}
				for i, p := range tg.params {
					if tf.params[i].Name() != p.Name() {
						t.Fatalf("parameter %d: %s vs %s", i, tf.params[i].Name(), p.Name())
					}
					gf, gg := pendingGrad(tf, i), pendingGrad(tg, i)
					scale := 0.0
					for _, v := range gg {
						scale = math.Max(scale, math.Abs(float64(v)))
					}
					for j := range gg {
						if d := math.Abs(float64(gf[j] - gg[j])); d > 1e-4*scale+1e-6 {
							t.Fatalf("%s[%d]: own gradient %v, graphs %v (largest %v)", p.Name(), j, gf[j], gg[j], scale)
						}
					}
				}
				nf, err := tf.Apply()
				if err != nil {
					t.Fatal(err)
				}
				ng, err := tg.Apply()
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(nf-ng) > 1e-4*ng {
					t.Fatalf("gradient norm: own %v, graphs %v", nf, ng)
				}
				// The step updated the weights in place; inference must see them, on both engines.
				if fm.Config.NumLabels == 0 {
					after, err := fm.LogProbs(ctx, seqs)
					if err != nil {
						t.Fatal(err)
					}
					fm.SetEngine("gomlx")
					graphs, _ := fm.LogProbs(ctx, seqs)
					fm.SetEngine("cpu")
					for j := range after[0] {
						if d := math.Abs(float64(after[0][j] - graphs[0][j])); d > 1e-5 {
							t.Fatalf("after the step, inference differs from the graphs by %g: stale packed weights", d)
						}
					}
				}
			})
		}
	}
}

// TestLoRADropoutFiniteDifferences: with live dropout, the CPU engine's adapter gradients match
// central differences of the loss under the same masks (Evaluate draws the masks the next
// Accumulate draws).
func TestLoRADropoutFiniteDifferences(t *testing.T) {
	fm, _ := randomPair(t, nil, &model.LoRA{R: 2, Alpha: 4, Dropout: 0.3, Targets: []string{"q", "v", "up", "down"}})
	exs := randomExamples(2, 3, 200)
	ctx := context.Background()
	tr := NewTrainer(fm, Loss{Kind: PRO, SFTWeight: 0.5}, DefaultOptimizer())
	tr.DropoutSeed = 5
	base, err := tr.Evaluate(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Accumulate(ctx, exs); err != nil {
		t.Fatal(err)
	}
	tr.micro = 0 // evaluate under the masks the accumulation used
	for i, p := range tr.params {
		grad := pendingGrad(tr, i)
		best := 0
		for j := range grad {
			if math.Abs(float64(grad[j])) > math.Abs(float64(grad[best])) {
				best = j
			}
		}
		w := tensors.MustCopyFlatData[float32](p.MustValue())
		loss := func(delta float32) float64 {
			w2 := append([]float32(nil), w...)
			w2[best] += delta
			p.MustSetValue(tensors.FromFlatDataAndDimensions(w2, p.Shape().Dimensions...))
			st, err := tr.Evaluate(ctx, exs)
			if err != nil {
				t.Fatal(err)
			}
			return st.Loss
		}
		const eps = 1e-2
		fd := (loss(eps) - loss(-eps)) / (2 * eps)
		p.MustSetValue(tensors.FromFlatDataAndDimensions(w, p.Shape().Dimensions...))
		if g := float64(grad[best]); math.Abs(fd-g) > 0.02*math.Abs(g)+1e-3 {
			t.Errorf("%s[%d]: gradient %.6f, finite difference %.6f", p.Name(), best, g, fd)
		}
	}
	again, _ := tr.Evaluate(ctx, exs)
	if again.Loss != base.Loss {
		t.Fatalf("the same masks gave losses %v and %v", base.Loss, again.Loss)
	}
}

// TestLossGradMatchesFiniteDifferences: the analytic gradient of every objective, with the
// summed SFT term and PRO's reward temperature, matches central differences of TermsOf.
func TestLossGradMatchesFiniteDifferences(t *testing.T) {
	sc := Scored{Mean: []float64{-1.1, -0.7, -2.3, -1.9}, Sum: []float64{-5.5, -2.1, -9.2, -3.8}, Reward: []float64{2.5, 1.0, 0.4, -0.6}}
	for _, l := range []Loss{
		{Kind: PRO, SFTWeight: 0.5}, {Kind: PRO, SFTWeight: 0.5, SFTSum: true}, {Kind: PRO, SFTWeight: 0.5, PROTemperature: true},
		{Kind: RRHF, SFTWeight: 1}, {Kind: RRHF, SFTWeight: 1, SFTSum: true}, {Kind: SFT, SFTSum: true}, {Kind: BT},
	} {
		dMean, dSum := l.Grad(sc)
		total := func(s Scored) float64 { return l.Total(l.TermsOf(s)) }
		for _, part := range []struct {
			vals []float64
			grad []float64
		}{{sc.Mean, dMean}, {sc.Sum, dSum}} {
			for i := range part.vals {
				if l.Kind == BT && i > 1 {
					continue
				}
				const eps = 1e-6
				orig := part.vals[i]
				part.vals[i] = orig + eps
				up := total(sc)
				part.vals[i] = orig - eps
				down := total(sc)
				part.vals[i] = orig
				if fd := (up - down) / (2 * eps); math.Abs(fd-part.grad[i]) > 1e-5 {
					t.Errorf("%+v: d/d[%d] = %v, finite difference %v", l, i, part.grad[i], fd)
				}
			}
		}
	}
	// PRO's temperature by hand for two candidates: T = r0 − r1 multiplies both logits.
	l := Loss{Kind: PRO, PROTemperature: true}
	two := Scored{Mean: []float64{-1, -2}, Sum: []float64{-1, -2}, Reward: []float64{3, 1}}
	rank, _ := l.TermsOf(two)
	if want := math.Log(math.Exp(-1*2)+math.Exp(-2*2)) + 2; math.Abs(rank-want) > 1e-12 {
		t.Fatalf("PRO with temperature: %v, by hand %v", rank, want)
	}
	if r, _ := l.TermsOf(Scored{Mean: two.Mean, Sum: two.Sum}); math.Abs(r-(math.Log(math.Exp(-1)+math.Exp(-2))+1)) > 1e-12 {
		t.Fatalf("without rewards the temperature must not apply: %v", r)
	}
}
