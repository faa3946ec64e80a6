package eval

import (
	"context"
	"fmt"
	"strings"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cyclealign/cyclealign/internal/generate"
)

// Remote is a model under test behind an OpenAI-compatible completions endpoint (for instance
// cyclealign serve, or vLLM).
type Remote struct {
	URL, Model, APIKey string
}

// greedy asks for temperature-0 completions that stop at the next human turn.
func (r *Remote) greedy(ctx context.Context, prompts []string, maxNew int) ([]string, error) {
	c := openai.NewClient(option.WithBaseURL(strings.TrimRight(r.URL, "/")+"/"), option.WithAPIKey(r.APIKey))
	out := make([]string, len(prompts))
	for i, p := range prompts {
		res, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(r.Model),
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(p)}, MaxTokens: openai.Int(int64(maxNew)),
			Temperature: openai.Float(0), Stop: openai.CompletionNewParamsStopUnion{OfString: openai.String(generate.DefaultStop)}})
		if err != nil {
			return nil, fmt.Errorf("model under test at %s: %w", r.URL, err)
		}
		if len(res.Choices) == 0 {
			return nil, fmt.Errorf("model under test at %s returned no choice", r.URL)
		}
		out[i] = res.Choices[0].Text
	}
	return out, nil
}
