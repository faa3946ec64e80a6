package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/model"
)

// Optimizer holds AdamW's settings (docs/METHOD.md defaults) and the schedule.
type Optimizer struct {
	LR          float64 // peak learning rate
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64 // on matrices and embeddings; norms and biases get none
	ClipNorm    float64 // clip by global gradient norm; 0: off
	WarmupSteps int     // linear warm-up from 0
	TotalSteps  int     // cosine decay to 0 at TotalSteps; 0: constant after warm-up
}

// DefaultOptimizer is docs/METHOD.md's AdamW for full fine-tuning.
func DefaultOptimizer() Optimizer {
	return Optimizer{LR: 5e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, ClipNorm: 1}
}

// Schedule returns the optimiser with its schedule laid over total steps: a warm-up of
// warmupRatio of them, then the cosine decay. Every trainer (train, align, pretrain) sets its
// schedule here.
func (o Optimizer) Schedule(total int, warmupRatio float64) Optimizer {
	o.TotalSteps = total
	o.WarmupSteps = int(warmupRatio * float64(total))
	return o
}

// LRAt is the learning rate of optimiser step `step` (0-based), as transformers'
// get_cosine_schedule_with_warmup computes it.
func (o Optimizer) LRAt(step int) float64 {
	if step < o.WarmupSteps {
		return o.LR * float64(step) / float64(max(1, o.WarmupSteps))
	}
	if o.TotalSteps <= o.WarmupSteps {
		return o.LR
	}
	p := float64(step-o.WarmupSteps) / float64(max(1, o.TotalSteps-o.WarmupSteps))
	return o.LR * math.Max(0, 0.5*(1+math.Cos(math.Pi*math.Min(p, 1))))
}

// decays reports whether a tensor gets weight decay: not norms, not biases.
func decays(name string) bool {
	return !strings.HasSuffix(name, ".bias") && !model.IsNorm(name)
}

// Trainer updates a model's trainable variables. Gradients accumulate across calls to
// Accumulate until Apply takes an optimiser step.
type Trainer struct {
	M    *model.Model
	Loss Loss
	Opt  Optimizer
	Step int // optimiser steps taken
	// DropoutSeed seeds LoRA dropout; each micro-batch draws from (seed, step, micro-batch),
	// so a resumed run draws the same masks.
	DropoutSeed uint64
	micro       int

	params      []*mlctx.Variable
	accum       []*mlctx.Variable
	m1, m2      []*mlctx.Variable
	accumulated int // examples in the pending accumulation
	mu          sync.Mutex
	execs       map[string]*mlctx.Exec
	graphOwner  model.GraphOwner

	fast  bool         // on the engine's own CPU path (fast.go)
	grads *model.Grads // its pending gradient
}

// Scopes of the optimiser's own variables.
const (
	accumScope = "/train/accum"
	m1Scope    = "/train/m1"
	m2Scope    = "/train/m2"
)

// NewTrainer prepares training of every trainable variable of m.
func NewTrainer(m *model.Model, loss Loss, opt Optimizer) *Trainer {
	installGradient()
	t := &Trainer{M: m, Loss: loss, Opt: opt, execs: map[string]*mlctx.Exec{}, fast: m.FastTrainable()}
	for v := range m.Ctx.IterVariables() {
		if v.Trainable && !strings.HasPrefix(v.Scope(), "/train") {
			t.params = append(t.params, v)
		}
	}
	for _, p := range t.params {
		// A new trainer on the same model starts from fresh optimiser state.
		mk := func(scope string) *mlctx.Variable {
			v := m.Ctx.InAbsPath(scope).Checked(false).VariableWithValue(key(p), tensors.FromShape(p.Shape()))
			v.MustSetValue(tensors.FromShape(p.Shape()))
			v.Trainable = false
			return v
		}
		if !t.fast { // the own path accumulates in Go buffers (model.Grads)
			t.accum = append(t.accum, mk(accumScope))
		}
		t.m1 = append(t.m1, mk(m1Scope))
		t.m2 = append(t.m2, mk(m2Scope))
	}
	return t
}

// key names a parameter's optimiser state: its scope and name, with "/" made safe.
func key(p *mlctx.Variable) string {
	return strings.ReplaceAll(strings.TrimPrefix(p.Scope(), "/"), "/", "|") + "|" + p.Name()
}

// NumParams counts the trainable parameters.
func (t *Trainer) NumParams() int {
	n := 0
	for _, p := range t.params {
		n += p.Shape().Size()
	}
	return n
}

func (t *Trainer) run(name string, fn any, args ...any) (out []*tensors.Tensor, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.execs[name]
	if !ok {
		if e, err = mlctx.NewExecAny(t.M.Backend, t.M.Ctx, fn); err != nil {
			return nil, err
		}
		e.SetMaxCache(64)
		t.execs[name] = e
	}
	model.NoteGraph(&t.graphOwner, name, args...)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %v", name, r)
		}
	}()
	return e.Exec(args...)
}

// minCandidates is 1 for language modelling with SFT, else 2.
func (t *Trainer) minCandidates() int {
	if t.Loss.Kind == SFT {
		return 1
	}
	return 2
}

// Stats are the results of a forward pass over a batch.
type Stats struct {
	Loss, Rank, SFT float64     // summed over the batch's examples
	Scores          [][]float64 // per example, per candidate (best first)
	Scored          []Scored    // per example: mean and summed scores and rewards
	Examples        int
	Tokens          int
}

func (t *Trainer) stats(b *batch, out []*tensors.Tensor) Stats {
	st := Stats{Examples: b.examples, Tokens: b.tokens,
		Loss: float64(tensors.ToScalar[float32](out[0])),
		Rank: float64(tensors.ToScalar[float32](out[1])),
		SFT:  float64(tensors.ToScalar[float32](out[2]))}
	scores := tensors.MustCopyFlatData[float32](out[3])
	sums := tensors.MustCopyFlatData[float32](out[4])
	st.Scores = make([][]float64, b.examples)
	st.Scored = make([]Scored, b.examples)
	for r, o := range b.owner {
		st.Scores[o[0]] = append(st.Scores[o[0]], float64(scores[r]))
		sc := &st.Scored[o[0]]
		sc.Mean, sc.Sum = append(sc.Mean, float64(scores[r])), append(sc.Sum, float64(sums[r]))
	}
	for e := range st.Scored {
		st.Scored[e].Reward = b.rewards[e]
	}
	return st
}

// Accumulate adds the gradient of the summed loss over exs to the pending gradient.
func (t *Trainer) Accumulate(ctx context.Context, exs []Example) (Stats, error) {
	if err := t.Loss.Fits(t.M); err != nil {
		return Stats{}, err
	}
	if t.fast {
		return t.fastAccumulate(ctx, exs)
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	b, err := newBatch(t.M, exs, t.minCandidates(), t.Loss)
	if err != nil {
		return Stats{}, err
	}
	args := b.args
	dropout := t.M.LoRADropout() > 0
	if dropout {
		seed := int64(rand.New(rand.NewPCG(t.DropoutSeed, uint64(t.Step)<<20|uint64(t.micro))).Uint64() >> 1)
		rng, err := RNGStateFromSeed(seed)
		if err != nil {
			return Stats{}, err
		}
		args = append(append([]any(nil), args...), rng)
	}
	t.micro++
	out, err := t.run("accumulate", func(ctx *mlctx.Context, in []*Node) []*Node {
		if dropout {
			ctx.SetGraphParam(in[0].Graph(), model.DropoutRNGParam, in[len(in)-1])
		}
		total, rank, sft, scores, sums := lossGraph(t.M, t.Loss, ctx, in)
		g := total.Graph()
		nodes := make([]*Node, len(t.params))
		for i, p := range t.params {
			nodes[i] = p.ValueGraph(g)
		}
		for i, grad := range Gradient(total, nodes...) {
			t.accum[i].SetValueGraph(Add(t.accum[i].ValueGraph(g), grad))
		}
		return []*Node{total, rank, sft, scores, sums}
	}, args...)
	if err != nil {
		return Stats{}, err
	}
	t.accumulated += b.examples
	return t.stats(b, out), nil
}

// Evaluate computes the loss over exs without touching gradients.
func (t *Trainer) Evaluate(ctx context.Context, exs []Example) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	if t.fast {
		st, _, _, _, _, err := t.fastPass(exs)
		return st, err
	}
	b, err := newBatch(t.M, exs, t.minCandidates(), t.Loss)
	if err != nil {
		return Stats{}, err
	}
	out, err := t.run("evaluate", func(ctx *mlctx.Context, in []*Node) []*Node {
		total, rank, sft, scores, sums := lossGraph(t.M, t.Loss, ctx, in)
		return []*Node{total, rank, sft, scores, sums}
	}, b.args...)
	if err != nil {
		return Stats{}, err
	}
	return t.stats(b, out), nil
}

// globalNorm is sqrt(Σ g²) over the pending gradient divided by the example count.
func (t *Trainer) globalNorm(g *Graph, inv *Node) *Node {
	sum := ScalarZero(g, dtypes.Float32)
	for _, a := range t.accum {
		sum = Add(sum, ReduceAllSum(Square(Mul(a.ValueGraph(g), inv))))
	}
	return Sqrt(sum)
}

// GradNorm is the global norm of the mean gradient accumulated so far.
func (t *Trainer) GradNorm() (float64, error) {
	if t.accumulated == 0 {
		return 0, fmt.Errorf("no gradient accumulated")
	}
	if t.fast {
		return float64(t.fastNorm()), nil
	}
	out, err := t.run("gradnorm", func(ctx *mlctx.Context, inv *Node) *Node {
		return t.globalNorm(inv.Graph(), inv)
	}, float32(1/float64(t.accumulated)))
	if err != nil {
		return 0, err
	}
	return float64(tensors.ToScalar[float32](out[0])), nil
}

// stepConsts are the numbers of the coming AdamW step, the same on both paths.
type stepConsts struct {
	lr, inv, c1, c2, clip float32 // learning rate, 1/examples, bias corrections, clipping norm
}

func (t *Trainer) stepConsts() stepConsts {
	o, step := t.Opt, t.Step+1
	clip := o.ClipNorm
	if clip <= 0 {
		clip = math.Inf(1)
	}
	return stepConsts{lr: float32(o.LRAt(t.Step)), inv: float32(1 / float64(t.accumulated)),
		c1: float32(1 - math.Pow(o.Beta1, float64(step))), c2: float32(1 - math.Pow(o.Beta2, float64(step))), clip: float32(clip)}
}

// Apply takes one AdamW step on the mean of the accumulated gradient (so k micro-batches
// give the same update as one batch holding all their examples), then clears it. It returns
// the gradient's global norm before clipping.
func (t *Trainer) Apply() (float64, error) {
	if t.fast {
		return t.fastApply()
	}
	if t.accumulated == 0 {
		return 0, fmt.Errorf("no gradient accumulated")
	}
	o := t.Opt
	k := t.stepConsts()
	out, err := t.run("apply", func(ctx *mlctx.Context, in []*Node) *Node {
		g := in[0].Graph()
		lr, inv, c1, c2, maxNorm := in[0], in[1], in[2], in[3], in[4]
		norm := t.globalNorm(g, inv)
		// torch.nn.utils.clip_grad_norm_: scale by max_norm/(norm+1e-6) when that is below 1.
		scale := Mul(inv, MinScalar(Div(maxNorm, AddScalar(norm, 1e-6)), 1))
		for i, p := range t.params {
			grad := Mul(t.accum[i].ValueGraph(g), scale)
			m1 := Add(MulScalar(t.m1[i].ValueGraph(g), o.Beta1), MulScalar(grad, 1-o.Beta1))
			m2 := Add(MulScalar(t.m2[i].ValueGraph(g), o.Beta2), MulScalar(Square(grad), 1-o.Beta2))
			w := p.ValueGraph(g)
			if decays(p.Name()) && o.WeightDecay > 0 {
				w = Mul(w, OneMinus(MulScalar(lr, o.WeightDecay)))
			}
			upd := Div(Div(m1, c1), AddScalar(Sqrt(Div(m2, c2)), o.Eps))
			p.SetValueGraph(Sub(w, Mul(lr, upd)))
			t.m1[i].SetValueGraph(m1)
			t.m2[i].SetValueGraph(m2)
			t.accum[i].SetValueGraph(ZerosLike(grad))
		}
		return norm
	}, k.lr, k.inv, k.c1, k.c2, k.clip)
	if err != nil {
		return 0, err
	}
	t.Step++
	t.accumulated, t.micro = 0, 0
	return float64(tensors.ToScalar[float32](out[0])), nil
}
