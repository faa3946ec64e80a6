package blackbox

import (
	"context"
	"fmt"

	"github.com/cyclealign/cyclealign/internal/chat"
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

// ScoreChats returns the reward of each response as the last assistant turn of its
// conversation: rendered by the reward model's chat template as TRL's reward trainer and
// RewardBench render it (special tokens matched, no BOS added), or, without a template, the
// conversation in words followed by the response.
func (r *RewardModel) ScoreChats(ctx context.Context, convs [][]chat.Message, responses []string) ([]float64, error) {
	if r.M.Chat == nil {
		prompts := make([]string, len(convs))
		for i, c := range convs {
			prompts[i] = chat.Plain(append(c[:len(c):len(c)], chat.Message{Role: "assistant"}))
		}
		return r.ScorePairs(ctx, prompts, responses)
	}
	seqs := make([][]int, len(convs))
	for i, c := range convs {
		text, err := r.M.Chat.Render(append(c[:len(c):len(c)], chat.Message{Role: "assistant", Content: responses[i]}), false, false)
		if err != nil {
			return nil, err
		}
		ids := r.M.Tokenizer.Encode(text, false)
		if len(ids) > r.M.Config.MaxPositions { // keep the end, where the reward is read
			ids = ids[len(ids)-r.M.Config.MaxPositions:]
		}
		seqs[i] = ids
	}
	return r.M.Rewards(ctx, seqs)
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
