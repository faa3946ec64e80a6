package generate

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cyclealign/cyclealign/internal/openaiapi"
)

// Remote samples completions from an OpenAI-compatible inference server (vLLM, SGLang,
// cyclealign serve) through POST /v1/completions, and moves the server's weights with the
// runtime LoRA API or SGLang's /update_weights_from_disk (the client's own methods).
type Remote struct {
	*openaiapi.Client
}

// Text samples opt.N completions of each prompt from model (text and finish reason), one
// request a prompt, each with its own seed derived from opt.Seed, and sums the completion
// tokens the server reports (usage). Prompts go as token ids (the completions API takes them),
// so the server samples after exactly the tokens the white-box scores. A reply that is not
// opt.N distinct texts is refused, naming the server.
func (r *Remote) Text(ctx context.Context, model string, prompts [][]int, opt Options) ([][]Completion, int, error) {
	out := make([][]Completion, len(prompts))
	tokens := make([]int, len(prompts))
	errs := make([]error, len(prompts))
	temp := opt.Temperature
	if opt.Greedy {
		temp = 0
	}
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			seed := int64((opt.Seed + uint64(i)*0x9e3779b97f4a7c15) >> 1)
			choices, usage, err := r.Completions(ctx, openaiapi.CompletionRequest{Model: model, Prompt: p, N: opt.N,
				MaxTokens: opt.MaxNewTokens, Temperature: temp, TopP: opt.TopP, Seed: &seed, Stop: opt.Stop})
			if err != nil {
				errs[i] = fmt.Errorf("generation server: %w", err)
				return
			}
			for _, c := range choices {
				out[i] = append(out[i], Completion{Text: c.Text, FinishReason: c.FinishReason})
			}
			tokens[i] = usage.CompletionTokens
		})
	}
	wg.Wait()
	total := 0
	for _, t := range tokens {
		total += t
	}
	return out, total, errors.Join(errs...)
}

// Ready asks for the model list once: nil once the server answers.
func (r *Remote) Ready(ctx context.Context) error {
	_, err := r.WithAttempts(1).Models(ctx)
	return err
}
