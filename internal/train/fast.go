package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/cpu"
	"github.com/cyclealign/cyclealign/internal/model"
)

// Training on the engine's own CPU path (model.FastTrainable): the model computes token
// log-probabilities and their backward pass; this file turns them into the ranking losses and
// their gradients, accumulates, clips and takes AdamW steps with the same arithmetic as the
// graphs in trainer.go. The optimiser state stays in the trainer's variables, so checkpoints
// and resuming are the same on both paths.

// fastPass runs exs forward and returns the stats, each example's scores, the pass, the rows
// and the per-token outputs.
func (t *Trainer) fastPass(exs []Example) (Stats, []Scored, *model.TrainPass, *rows, [][]float32, error) {
	rs, err := flatten(t.M, exs, t.minCandidates())
	if err != nil {
		return Stats{}, nil, nil, nil, nil, err
	}
	drop := model.Dropout{Rate: t.M.LoRADropout(), Seed: rand.New(rand.NewPCG(t.DropoutSeed, uint64(t.Step)<<20|uint64(t.micro))).Uint64()}
	pass, outs, err := t.M.TrainForward(rs.seqs, drop)
	if err != nil {
		return Stats{}, nil, nil, nil, nil, err
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
	return st, scored, pass, rs, outs, nil
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

func (t *Trainer) fastAccumulate(ctx context.Context, exs []Example) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	st, scored, pass, rs, outs, err := t.fastPass(exs)
	if err != nil {
		return Stats{}, err
	}
	t.micro++
	// dL/d(token output): the mean score's gradient spread over what it averages, plus the
	// summed score's on each of its tokens.
	d := make([][]float32, len(rs.seqs))
	row := 0
	for _, sc := range scored {
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
	pass.Backward(d, t.grads)
	t.accumulated += len(exs)
	return st, nil
}

// gradOf is the accumulated gradient buffer of a trainable variable.
func (t *Trainer) gradOf(p *mlctx.Variable) []float32 {
	if p.Scope() == model.LoRAScope {
		return t.grads.LoRA[p.Name()]
	}
	return t.grads.Base[p.Name()]
}

// fastNorm is the global norm of the mean gradient (float32, as the graph computes it).
func (t *Trainer) fastNorm() float32 {
	inv := t.stepConsts().inv
	sum := float32(0)
	for _, p := range t.params {
		part := float32(0)
		for _, v := range t.gradOf(p) {
			x := v * inv
			part += x * x
		}
		sum += part
	}
	return float32(math.Sqrt(float64(sum)))
}

func (t *Trainer) fastApply() (float64, error) {
	if t.accumulated == 0 {
		return 0, fmt.Errorf("no gradient accumulated")
	}
	o, k := t.Opt, t.stepConsts()
	lr := k.lr
	norm := t.fastNorm()
	// torch.nn.utils.clip_grad_norm_: scale by max_norm/(norm+1e-6) when that is below 1.
	scale := k.inv * min(k.clip/(norm+1e-6), 1)
	b1, b2, eps := float32(o.Beta1), float32(o.Beta2), float32(o.Eps)
	inv1, inv2 := 1/k.c1, 1/k.c2 // bias corrections as multipliers: a division less per weight
	base := false
	for i, p := range t.params {
		grad := t.gradOf(p)
		decay := float32(1)
		if decays(p.Name()) && o.WeightDecay > 0 {
			decay = 1 - lr*float32(o.WeightDecay)
		}
		base = base || p.Scope() != model.LoRAScope
		// The weights and both moments are updated where they are stored: no copies.
		err := tensors.MutableFlatData(p.MustValue(), func(w []float32) {
			tensors.MutableFlatData(t.m1[i].MustValue(), func(m1 []float32) {
				tensors.MutableFlatData(t.m2[i].MustValue(), func(m2 []float32) {
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
				})
			})
		})
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.Name(), err)
		}
	}
	t.M.WeightsChanged(base)
	t.Step++
	t.accumulated, t.micro = 0, 0
	return float64(norm), nil
}
