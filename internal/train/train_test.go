package train

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/model"
)

func loadTiny(t *testing.T) *model.Model {
	t.Helper()
	b, err := model.NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-llama-metaspace"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLossTermsByHand(t *testing.T) {
	s := []float64{-1, -2, -0.5}
	// RRHF: max(0,-2+1) + max(0,-0.5+1) + max(0,-0.5+2) = 0 + 0.5 + 1.5.
	rank, sft := Loss{Kind: RRHF}.Terms(s)
	if math.Abs(rank-2) > 1e-12 || sft != 1 {
		t.Fatalf("rrhf terms %v %v", rank, sft)
	}
	if got := (Loss{Kind: RRHF, SFTWeight: 1}).Total(rank, sft); math.Abs(got-3) > 1e-12 {
		t.Fatalf("rrhf total %v", got)
	}
	// PRO: [log(e^-1+e^-2+e^-0.5) + 1] + [log(e^-2+e^-0.5) + 2] = 2.805543883319481.
	rank, _ = Loss{Kind: PRO}.Terms(s)
	if math.Abs(rank-2.805543883319481) > 1e-12 {
		t.Fatalf("pro rank %v", rank)
	}
	if got := (Loss{Kind: PRO, SFTWeight: 0.5}).Total(rank, 1); math.Abs(got-3.305543883319481) > 1e-12 {
		t.Fatalf("pro total %v", got)
	}
	if got := (Loss{Kind: SFT}).Total(5, 1); got != 1 {
		t.Fatalf("sft total %v", got)
	}
	// A correctly ordered ranking costs RRHF nothing.
	if r, _ := (Loss{Kind: RRHF}).Terms([]float64{-0.1, -0.2, -3}); r != 0 {
		t.Fatalf("ordered ranking: rrhf %v", r)
	}
}

func tinyExamples(m *model.Model) []Example {
	rs := []Ranked{
		{Prompt: "\n\nHuman: How do I bake bread?\n\nAssistant:", Candidates: []string{" Mix flour, water and yeast, then bake.", " No.", " Bread is a food made of flour and water, baked."}},
		{Prompt: "\n\nHuman: Hi\n\nAssistant:", Candidates: []string{" Hello! How can I help?", " What"}},
		{Prompt: "\n\nHuman: Tell me a joke.\n\nAssistant:", Candidates: []string{" Why did the cat sit on the computer?", " I will not.", " Jokes are fun", " ok"}},
	}
	var out []Example
	for _, r := range rs {
		out = append(out, Tokenize(m.Tokenizer, r, 0, End{}))
	}
	return out
}

// TestTrainerScoresMatchInference: the training pass's scores equal the engine's
// length-normalised scores from inference, and its loss equals the formulas applied to them,
// for mixed n and lengths.
func TestTrainerScoresMatchInference(t *testing.T) {
	m := loadTiny(t)
	exs := tinyExamples(m)
	ctx := context.Background()
	for _, kind := range []LossKind{SFT, RRHF, PRO} {
		l := Loss{Kind: kind, SFTWeight: DefaultSFTWeight(kind)}
		st, err := NewTrainer(m, l, DefaultOptimizer()).Evaluate(ctx, exs)
		if err != nil {
			t.Fatal(err)
		}
		want := 0.0
		for e, ex := range exs {
			var prompts [][]int
			for range ex.Candidates {
				prompts = append(prompts, ex.Prompt)
			}
			sc, err := m.ScoreIDs(ctx, prompts, ex.Candidates)
			if err != nil {
				t.Fatal(err)
			}
			for c := range sc {
				if math.Abs(sc[c].Mean-st.Scores[e][c]) > 1e-5 {
					t.Fatalf("%s example %d candidate %d: training score %v, inference %v", kind, e, c, st.Scores[e][c], sc[c].Mean)
				}
			}
			want += l.Total(l.Terms(st.Scores[e]))
		}
		if math.Abs(st.Loss-want) > 1e-4 {
			t.Fatalf("%s: training loss %v, reference %v", kind, st.Loss, want)
		}
	}
}

// pendingGrad is the gradient accumulated for parameter i.
func pendingGrad(tr *Trainer, i int) []float32 {
	return append([]float32(nil), tr.grads.Of(tr.params[i])...)
}

func weightValue(t *testing.T, m *model.Model, name string) []float32 {
	v, err := m.Variable(name).Value()
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](v)
}

func setWeight(t *testing.T, m *model.Model, name string, data []float32) {
	v := m.Variable(name)
	if err := v.SetValue(tensors.FromFlatDataAndDimensions(data, v.Shape().Dimensions...)); err != nil {
		t.Fatal(err)
	}
}

// TestFiniteDifferences checks the gradient of each loss against central differences.
func TestFiniteDifferences(t *testing.T) {
	m := loadTiny(t)
	exs := tinyExamples(m)
	ctx := context.Background()
	names := []string{"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"}
	for _, kind := range []LossKind{SFT, RRHF, PRO} {
		tr := NewTrainer(m, Loss{Kind: kind, SFTWeight: DefaultSFTWeight(kind)}, DefaultOptimizer())
		if _, err := tr.Accumulate(ctx, exs); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			var grad []float32
			for i, p := range tr.params {
				if p.Name() == name {
					grad = pendingGrad(tr, i)
				}
			}
			w := weightValue(t, m, name)
			// The largest gradient entry of this tensor, where float32 differences are reliable.
			best := 0
			for i := range grad {
				if math.Abs(float64(grad[i])) > math.Abs(float64(grad[best])) {
					best = i
				}
			}
			const eps = 1e-2
			loss := func(delta float32) float64 {
				w2 := append([]float32(nil), w...)
				w2[best] += delta
				setWeight(t, m, name, w2)
				st, err := tr.Evaluate(ctx, exs)
				if err != nil {
					t.Fatal(err)
				}
				return st.Loss
			}
			fd := (loss(eps) - loss(-eps)) / (2 * eps)
			setWeight(t, m, name, w)
			g := float64(grad[best])
			if math.Abs(fd-g) > 0.02*math.Abs(g)+1e-3 {
				t.Errorf("%s %s[%d]: gradient %.6f, finite difference %.6f", kind, name, best, g, fd)
			}
		}
	}
}

// TestAccumulationEqualsLargeBatch: micro-batches accumulated (AccumulateIn, as train and align
// split a step with --grad-accum) give the same stats and update as one batch holding them all.
func TestAccumulationEqualsLargeBatch(t *testing.T) {
	ctx := context.Background()
	opt := DefaultOptimizer()
	opt.LR, opt.WarmupSteps, opt.TotalSteps = 1e-3, 0, 10
	l := Loss{Kind: PRO, SFTWeight: 0.5}
	a, b := loadTiny(t), loadTiny(t)
	exs := tinyExamples(a)
	ta, tb := NewTrainer(a, l, opt), NewTrainer(b, l, opt)
	for step := 0; step < 2; step++ {
		sa, err := ta.Accumulate(ctx, exs)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := tb.AccumulateIn(ctx, exs, len(exs)) // one example a micro-batch
		if err != nil {
			t.Fatal(err)
		}
		if sa.Examples != sb.Examples || sa.Tokens != sb.Tokens || math.Abs(sa.Loss-sb.Loss) > 1e-5*math.Abs(sa.Loss) || len(sb.Scored) != len(exs) {
			t.Fatalf("step %d: stats of one pass %+v, of micro-batches %+v", step, sa, sb)
		}
		// The pending gradients agree element by element before the step.
		for i := range ta.params {
			ga, gb := pendingGrad(ta, i), pendingGrad(tb, i)
			for j := range ga {
				if d := math.Abs(float64(ga[j] - gb[j])); d > 1e-5*(1+math.Abs(float64(ga[j]))) {
					t.Fatalf("step %d %s[%d]: accumulated gradient %v vs %v", step, ta.params[i].Name(), j, gb[j], ga[j])
				}
			}
		}
		na, err := ta.Apply()
		if err != nil {
			t.Fatal(err)
		}
		nb, err := tb.Apply()
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(na-nb) > 1e-5*na {
			t.Fatalf("step %d: gradient norms %v vs %v", step, na, nb)
		}
	}
	moved := false
	orig := loadTiny(t)
	for _, n := range a.TensorNames() {
		wa, wb, w0 := weightValue(t, a, n), weightValue(t, b, n), weightValue(t, orig, n)
		for i := range wa {
			// Adam divides by sqrt(v), so float32 rounding in the gradient shows up in the
			// update; 1e-5 is 1% of the 1e-3 step.
			if math.Abs(float64(wa[i]-wb[i])) > 1e-5 {
				t.Fatalf("%s[%d]: %v vs %v", n, i, wa[i], wb[i])
			}
			moved = moved || wa[i] != w0[i]
		}
	}
	if !moved {
		t.Fatal("two optimiser steps left every weight unchanged")
	}
}

func TestSchedule(t *testing.T) {
	o := Optimizer{LR: 1, WarmupSteps: 4, TotalSteps: 12}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0}, {2, 0.5}, {4, 1}, {8, 0.5}, {12, 0}, {20, 0}} {
		if got := o.LRAt(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("LRAt(%d) = %v, want %v", c.step, got, c.want)
		}
	}
}

func TestTrainingLowersLoss(t *testing.T) {
	m := loadTiny(t)
	ctx := context.Background()
	exs := tinyExamples(m)
	opt := DefaultOptimizer()
	opt.LR = 3e-3
	tr := NewTrainer(m, Loss{Kind: RRHF, SFTWeight: 1}, opt)
	first, err := tr.Evaluate(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		if _, err := tr.Accumulate(ctx, exs); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Apply(); err != nil {
			t.Fatal(err)
		}
	}
	last, _ := tr.Evaluate(ctx, exs)
	if last.Loss >= first.Loss*0.9 {
		t.Fatalf("8 steps: loss %v -> %v", first.Loss, last.Loss)
	}
}

func TestReadRankedErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"prompt":"p","candidates":["a","b"]}` + "\n" + `{"prompt":"p","candidates":["only"]}`, "line 2: 1 candidate"},
		{`{"prompt":"p","candidates":["a",""]}`, "line 1: candidate 1 is empty"},
		{`{"prompt":"","candidates":["a","b"]}`, "line 1: empty prompt"},
		{`{"prompt":"p","candidates":["a","b"]}` + "\n\n" + `{"prompt": "p", oops}`, "line 3: invalid JSON"},
		{`{"query":"q","responses":["a","b"],"scores":[1]}`, "line 1: 2 responses but 1 scores"},
		{`{"text":"x"}`, "line 1: want"},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "ranked.jsonl")
		os.WriteFile(p, []byte(c.body), 0o644)
		_, err := ReadRanked(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: got %v, want %q", c.body, err, c.want)
		}
	}
	p := filepath.Join(t.TempDir(), "rrhf.jsonl")
	os.WriteFile(p, []byte(`{"query":"q","responses":["low","high","mid"],"scores":[-1,2,0.5]}`), 0o644)
	rs, err := ReadRanked(p)
	if err != nil || strings.Join(rs[0].Candidates, ",") != "high,mid,low" {
		t.Fatalf("RRHF format ranked by score: %v %v", rs, err)
	}
}

// TestLanguageModelAndRewardLossesFall: a few steps of plain language modelling (SFT on single
// texts, as pretrain does) and of Bradley-Terry reward modelling (as train-rm does) lower their
// losses on a few rows.
func TestLanguageModelAndRewardLossesFall(t *testing.T) {
	ctx := context.Background()
	m := loadTiny(t)
	bos := m.Tokenizer.Encode("", true)
	var texts []Example
	for _, s := range []string{"\n\nHuman: Hi\n\nAssistant: Hello! How can I help?", "\n\nHuman: Name a fruit.\n\nAssistant: An apple."} {
		texts = append(texts, Example{Prompt: bos, Candidates: [][]int{m.Tokenizer.Encode(s, false)}})
	}
	opt := DefaultOptimizer()
	opt.LR = 3e-3
	for _, c := range []struct {
		name string
		m    func() *model.Model
		loss Loss
		exs  func(*model.Model) []Example
	}{
		{"language model", func() *model.Model { return m }, Loss{Kind: SFT}, func(*model.Model) []Example { return texts }},
		{"reward model", func() *model.Model {
			rm, err := m.WithRewardHead(1)
			if err != nil {
				t.Fatal(err)
			}
			return rm
		}, Loss{Kind: BT}, func(rm *model.Model) []Example {
			var out []Example
			for _, p := range [][3]string{{"\n\nHuman: Hi\n\nAssistant:", " Hello! How can I help?", " Go away."},
				{"\n\nHuman: Name a fruit.\n\nAssistant:", " An apple.", " A rock."}} {
				out = append(out, Example{Prompt: rm.Tokenizer.Encode(p[0], true),
					Candidates: [][]int{rm.Tokenizer.Encode(p[1], false), rm.Tokenizer.Encode(p[2], false)}})
			}
			return out
		}},
	} {
		mm := c.m()
		exs := c.exs(mm)
		tr := NewTrainer(mm, c.loss, opt)
		first, err := tr.Evaluate(ctx, exs)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 6; i++ {
			if _, err := tr.Accumulate(ctx, exs); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Apply(); err != nil {
				t.Fatal(err)
			}
		}
		last, _ := tr.Evaluate(ctx, exs)
		if last.Loss >= first.Loss {
			t.Fatalf("%s: loss %v -> %v", c.name, first.Loss, last.Loss)
		}
		t.Logf("%s: loss %.4f -> %.4f", c.name, first.Loss, last.Loss)
	}
}

// TestLongPromptsAreFitted: a prompt longer than the model's positions is cut from its oldest
// tokens (as align does) instead of failing the loss or the training.
func TestLongPromptsAreFitted(t *testing.T) {
	m := loadTiny(t)
	long := Ranked{Prompt: "\n\nHuman: " + strings.Repeat("tell me about the weather today ", 80) + "\n\nAssistant:",
		Candidates: []string{" It is sunny.", " No."}}
	rep, err := Diagnose(context.Background(), m, Loss{Kind: PRO, SFTWeight: 0.5}, []Ranked{long}, End{})
	if err != nil {
		t.Fatalf("a long prompt failed the loss: %v", err)
	}
	if len(rep.PerPrompt) != 1 || math.IsNaN(rep.Loss) {
		t.Fatalf("report %+v", rep)
	}
	exs, err := TokenizeFitted(m, []Ranked{long}, 0, End{})
	if err != nil {
		t.Fatal(err)
	}
	ex := exs[0]
	full := Tokenize(m.Tokenizer, long, 0, End{})
	if len(full.Prompt)+len(full.Candidates[0]) <= m.Config.MaxPositions {
		t.Fatal("the test prompt fits; it checks nothing")
	}
	if len(ex.Prompt)+len(ex.Candidates[0]) > m.Config.MaxPositions || ex.Prompt[0] != full.Prompt[0] ||
		ex.Prompt[len(ex.Prompt)-1] != full.Prompt[len(full.Prompt)-1] {
		t.Fatalf("fitted prompt: %d tokens (first %d, last %d), model positions %d", len(ex.Prompt), ex.Prompt[0], ex.Prompt[len(ex.Prompt)-1], m.Config.MaxPositions)
	}
}

// TestResponseEnd: each candidate ends with the end it is given (EOS after encoding, a stop
// text encoded with it), and a candidate cut at maxResponse loses its end.
func TestResponseEnd(t *testing.T) {
	m := loadTiny(t)
	tok := m.Tokenizer
	r := Ranked{Prompt: "\n\nHuman: Hi\n\nAssistant:", Candidates: []string{" Hello there.", " No."}}
	eos, err := ParseEnd("eos", m.Config.EOSTokenIDs)
	if err != nil || !slices.Equal(eos.IDs, m.Config.EOSTokenIDs[:1]) || eos.Text != "" {
		t.Fatalf("eos: %+v %v", eos, err)
	}
	for i, c := range Tokenize(tok, r, 0, eos).Candidates {
		if want := append(tok.Encode(r.Candidates[i], false), m.Config.EOSTokenIDs[0]); !slices.Equal(c, want) {
			t.Fatalf("eos: candidate %d is %v, want %v", i, c, want)
		}
	}
	stop, _ := ParseEnd("\n\nHuman:", m.Config.EOSTokenIDs)
	for i, c := range Tokenize(tok, r, 0, stop).Candidates {
		if want := tok.Encode(r.Candidates[i]+"\n\nHuman:", false); !slices.Equal(c, want) || len(c) <= len(tok.Encode(r.Candidates[i], false)) {
			t.Fatalf("stop text: candidate %d is %v, want %v", i, c, want)
		}
	}
	plain := tok.Encode(r.Candidates[0], false)
	if c := Tokenize(tok, r, len(plain), eos).Candidates[0]; !slices.Equal(c, plain) {
		t.Fatalf("cut at %d tokens: %v, want the candidate without its end %v", len(plain), c, plain)
	}
	none, _ := ParseEnd("none", m.Config.EOSTokenIDs)
	if c := Tokenize(tok, r, 0, none).Candidates[0]; !slices.Equal(c, plain) {
		t.Fatalf("none: %v, want %v", c, plain)
	}
	if _, err := ParseEnd("eos", nil); err == nil || !strings.Contains(err.Error(), "eos_token_id") {
		t.Fatalf("eos without an EOS token: %v, want an error naming eos_token_id", err)
	}
}
