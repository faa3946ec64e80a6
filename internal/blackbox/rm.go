package blackbox

import (
	"context"
	"fmt"

	"github.com/cyclealign/cyclealign/internal/model"
)

// RewardModel scores responses by a local reward model (a causal LM with a scalar head, HF
// ...ForSequenceClassification layout) applied to prompt + response. As a ranker it is a
// Judge's Scorer with no demonstration weight: it needs no API and ignores demonstrations.
type RewardModel struct {
	M    *model.Model
	Name string // shown by Describe, e.g. the model directory
}

// Describe implements Scorer.
func (r *RewardModel) Describe() string {
	return fmt.Sprintf("reward model (%s): the scalar reward of prompt+response", r.Name)
}

// Scores returns the reward of each candidate after the prompt.
func (r *RewardModel) Scores(ctx context.Context, prompt string, cands []string) ([]float64, error) {
	prompts := make([]string, len(cands))
	for i := range prompts {
		prompts[i] = prompt
	}
	return r.ScorePairs(ctx, prompts, cands)
}

// ScorePairs returns the reward of each response after its prompt, all in shared batches.
// Texts are encoded as in training (prompt with special tokens, response without) and fitted
// to the context keeping the latest turns.
func (r *RewardModel) ScorePairs(ctx context.Context, prompts, responses []string) ([]float64, error) {
	seqs := make([][]int, len(prompts))
	for i := range prompts {
		p, resp := model.FitContext(r.M.Tokenizer.Encode(prompts[i], true), r.M.Tokenizer.Encode(responses[i], false), r.M.Config.MaxPositions)
		seqs[i] = append(append([]int(nil), p...), resp...)
	}
	return r.M.Rewards(ctx, seqs)
}
