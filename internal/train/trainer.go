// Package train is the white-box training side: the ranking losses (SFT, RRHF, PRO,
// Bradley–Terry) over ranked candidates with their gradients, AdamW with a warm-up/cosine schedule,
// clipping and gradient accumulation, and resumable checkpoints. The model's engine computes the
// forward and backward passes.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/cpu"
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
// Accumulate until Apply takes an optimiser step. The model's engine runs the forward and
// backward passes; the loss (loss.go) and AdamW (here) are the same whichever engine it is.
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
	m1, m2      []*mlctx.Variable
	accumulated int          // examples in the pending accumulation
	grads       *model.Grads // the pending gradient, summed over those examples
}

// Scopes of the optimiser's own variables.
const (
	m1Scope = "/train/m1"
	m2Scope = "/train/m2"
)

// NewTrainer prepares training of every trainable variable of m.
func NewTrainer(m *model.Model, loss Loss, opt Optimizer) *Trainer {
	t := &Trainer{M: m, Loss: loss, Opt: opt, params: m.Trainable()}
	for _, p := range t.params {
		// A new trainer on the same model starts from fresh optimiser state.
		mk := func(scope string) *mlctx.Variable {
			v := m.Ctx.InAbsPath(scope).Checked(false).VariableWithValue(key(p), tensors.FromShape(p.Shape()))
			v.MustSetValue(tensors.FromShape(p.Shape()))
			v.Trainable = false
			return v
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

// forward runs exs through the model and returns the stats, each example's scores, the pass,
// the rows and the per-token outputs.
func (t *Trainer) forward(exs []Example) (Stats, model.TrainPass, *rows, [][]float32, error) {
	rs, err := flatten(t.M, exs, t.minCandidates())
	if err != nil {
		return Stats{}, nil, nil, nil, err
	}
	drop := model.Dropout{Rate: t.M.LoRADropout(), Seed: rand.New(rand.NewPCG(t.DropoutSeed, uint64(t.Step)<<20|uint64(t.micro))).Uint64()}
	pass, outs, err := t.M.TrainForward(rs.seqs, drop)
	if err != nil {
		return Stats{}, nil, nil, nil, err
	}
	scored := make([]Scored, len(exs))
	st := Stats{Examples: len(exs), Tokens: rs.tokens, Scores: make([][]float64, len(exs)), Scored: scored}
	for r, o := range rs.owner {
		e := &scored[o[0]]
		mean, sum := t.rowScore(outs[r], rs.plen[r], len(rs.seqs[r]))
		e.Mean, e.Sum = append(e.Mean, mean), append(e.Sum, sum)
		st.Scores[o[0]] = append(st.Scores[o[0]], mean)
	}
	for e := range scored {
		scored[e].Reward = exs[e].Rewards
		rank, sft := t.Loss.TermsOf(scored[e])
		st.Rank += rank
		st.SFT += sft
		st.Loss += t.Loss.Total(rank, sft)
	}
	return st, pass, rs, outs, nil
}

// rowScore is a row's score, mean and summed: the reward head's output at its last token
// (BT), else the mean and the sum of the log-probabilities of its response tokens.
func (t *Trainer) rowScore(out []float32, plen, n int) (mean, sum float64) {
	if t.Loss.Kind == BT {
		return float64(out[n-1]), float64(out[n-1])
	}
	for _, v := range out[plen-1 : n-1] {
		sum += float64(v)
	}
	return sum / float64(n-plen), sum
}

// Accumulate adds the gradient of the summed loss over exs to the pending gradient.
func (t *Trainer) Accumulate(ctx context.Context, exs []Example) (Stats, error) {
	if err := t.Loss.Fits(t.M); err != nil {
		return Stats{}, err
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	st, pass, rs, outs, err := t.forward(exs)
	if err != nil {
		return Stats{}, err
	}
	t.micro++
	// dL/d(token output): the mean score's gradient spread over what it averages, plus the
	// summed score's on each of its tokens.
	d := make([][]float32, len(rs.seqs))
	row := 0
	for _, sc := range st.Scored {
		dMean, dSum := t.Loss.Grad(sc)
		for c := range sc.Mean {
			n, plen := len(rs.seqs[row]), rs.plen[row]
			d[row] = make([]float32, len(outs[row]))
			if t.Loss.Kind == BT {
				d[row][n-1] = float32(dMean[c])
			} else {
				for i := plen - 1; i < n-1; i++ {
					d[row][i] = float32(dMean[c]/float64(n-plen) + dSum[c])
				}
			}
			row++
		}
	}
	if t.grads == nil {
		t.grads = t.M.NewGrads()
	}
	if err := pass.Backward(d, t.grads); err != nil {
		return Stats{}, err
	}
	t.accumulated += len(exs)
	return st, nil
}

// AccumulateIn is Accumulate over exs split into k micro-batches (k < 2: one pass): the same
// gradient, with the activations of one micro-batch held at a time. The stats are summed.
func (t *Trainer) AccumulateIn(ctx context.Context, exs []Example, k int) (Stats, error) {
	var sum Stats
	size := (len(exs) + max(k, 1) - 1) / max(k, 1)
	for i := 0; i < len(exs); i += size {
		s, err := t.Accumulate(ctx, exs[i:min(i+size, len(exs))])
		if err != nil {
			return sum, err
		}
		sum.Loss, sum.Rank, sum.SFT = sum.Loss+s.Loss, sum.Rank+s.Rank, sum.SFT+s.SFT
		sum.Scores, sum.Scored = append(sum.Scores, s.Scores...), append(sum.Scored, s.Scored...)
		sum.Examples, sum.Tokens = sum.Examples+s.Examples, sum.Tokens+s.Tokens
	}
	return sum, nil
}

// Evaluate computes the loss over exs without touching gradients.
func (t *Trainer) Evaluate(ctx context.Context, exs []Example) (Stats, error) {
	if err := t.Loss.Fits(t.M); err != nil {
		return Stats{}, err
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	st, _, _, _, err := t.forward(exs)
	return st, err
}

// stepConsts are the numbers of the coming AdamW step.
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

// GradNorm is the global norm of the mean gradient accumulated so far (summed in float32).
func (t *Trainer) GradNorm() (float64, error) {
	if t.accumulated == 0 {
		return 0, fmt.Errorf("no gradient accumulated")
	}
	return float64(t.norm()), nil
}

func (t *Trainer) norm() float32 {
	inv := t.stepConsts().inv
	sum := float32(0)
	for _, p := range t.params {
		part := float32(0)
		for _, v := range t.grads.Of(p) {
			x := v * inv
			part += x * x
		}
		sum += part
	}
	return float32(math.Sqrt(float64(sum)))
}

// Apply takes one AdamW step on the mean of the accumulated gradient (so k micro-batches
// give the same update as one batch holding all their examples), then clears it. It returns
// the gradient's global norm before clipping.
func (t *Trainer) Apply() (float64, error) {
	if t.accumulated == 0 {
		return 0, fmt.Errorf("no gradient accumulated")
	}
	o, k := t.Opt, t.stepConsts()
	lr := k.lr
	norm := t.norm()
	// torch.nn.utils.clip_grad_norm_: scale by max_norm/(norm+1e-6) when that is below 1.
	scale := k.inv * min(k.clip/(norm+1e-6), 1)
	b1, b2, eps := float32(o.Beta1), float32(o.Beta2), float32(o.Eps)
	inv1, inv2 := 1/k.c1, 1/k.c2 // bias corrections as multipliers: a division less per weight
	var err error
	// The weights and both moments are updated where they are stored: no copies.
	uerr := t.M.Update(t.params, func(i int, w []float32) {
		p, grad := t.params[i], t.grads.Of(t.params[i])
		decay := float32(1)
		if decays(p.Name()) && o.WeightDecay > 0 {
			decay = 1 - lr*float32(o.WeightDecay)
		}
		e := tensors.MutableFlatData(t.m1[i].MustValue(), func(m1 []float32) {
			err = errors.Join(err, tensors.MutableFlatData(t.m2[i].MustValue(), func(m2 []float32) {
				cpu.Parallel(len(w), func(lo, hi int) {
					for j := lo; j < hi; j++ {
						g := grad[j] * scale
						m1[j] = m1[j]*b1 + g*(1-b1)
						m2[j] = m2[j]*b2 + g*g*(1-b2)
						upd := m1[j] * inv1 / (float32(math.Sqrt(float64(m2[j]*inv2))) + eps)
						w[j] = w[j]*decay - lr*upd
						grad[j] = 0
					}
				})
			}))
		})
		err = errors.Join(err, e)
	})
	if err = errors.Join(uerr, err); err != nil {
		return 0, err
	}
	t.Step++
	t.accumulated, t.micro = 0, 0
	return float64(norm), nil
}
