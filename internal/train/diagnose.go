package train

import (
	"context"

	"github.com/cyclealign/cyclealign/internal/model"
)

// PromptTerms are one prompt's scores and loss terms before weighting.
type PromptTerms struct {
	Scores   []float64 `json:"scores"`
	RankTerm float64   `json:"rank_term"`
	SFTTerm  float64   `json:"sft_term"`
}

// Report is the loss of a ranked set taken as one batch.
type Report struct {
	Loss      float64       `json:"loss"`
	GradNorm  float64       `json:"grad_global_norm"`
	PerPrompt []PromptTerms `json:"per_prompt"`
}

// Diagnose computes the batch loss (mean over prompts), the global norm of its gradient and
// each prompt's terms, without updating the model; candidates end with end, as in training.
func Diagnose(ctx context.Context, m *model.Model, l Loss, ranked []Ranked, end End) (*Report, error) {
	exs, err := TokenizeFitted(m, ranked, 0, end)
	if err != nil {
		return nil, err
	}
	t := NewTrainer(m, l, DefaultOptimizer())
	st, err := t.Accumulate(ctx, exs)
	if err != nil {
		return nil, err
	}
	rep := &Report{Loss: st.Loss / float64(st.Examples)}
	if rep.GradNorm, err = t.GradNorm(); err != nil {
		return nil, err
	}
	for e, s := range st.Scores {
		rank, sft := l.TermsOf(st.Scored[e])
		rep.PerPrompt = append(rep.PerPrompt, PromptTerms{Scores: s, RankTerm: rank, SFTTerm: sft})
	}
	return rep, nil
}

// PairAccuracy is the fraction of [chosen, rejected] examples a reward model scores chosen
// higher, in batches of 16.
func PairAccuracy(ctx context.Context, rm *model.Model, exs []Example) (float64, error) {
	t := NewTrainer(rm, Loss{Kind: BT}, DefaultOptimizer())
	right := 0
	for i := 0; i < len(exs); i += 16 {
		st, err := t.Evaluate(ctx, exs[i:min(i+16, len(exs))])
		if err != nil {
			return 0, err
		}
		for _, s := range st.Scores {
			if s[0] > s[1] {
				right++
			}
		}
	}
	return float64(right) / float64(len(exs)), nil
}
