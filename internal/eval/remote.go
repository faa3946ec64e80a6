package eval

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/generate"
)

// Remote is a model under test behind an OpenAI-compatible completions endpoint (for instance
// cyclealign serve, or vLLM).
type Remote struct {
	URL, Model, APIKey string
	Concurrency        int // requests in flight (0: 8), as a batching server wants them
}

// greedy asks for temperature-0 completions that stop at the next human turn. The first
// failure cancels the requests still to come and is returned.
func (r *Remote) greedy(ctx context.Context, prompts []string, convs [][]chat.Message, maxNew int) ([]string, error) {
	c := openai.NewClient(option.WithBaseURL(strings.TrimRight(r.URL, "/")+"/"), option.WithAPIKey(r.APIKey))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := make([]string, len(prompts))
	sem := make(chan struct{}, cmp.Or(r.Concurrency, 8))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			if convs != nil { // a conversation goes to the chat API: the server renders its template
				params := openai.ChatCompletionNewParams{Model: r.Model, MaxTokens: openai.Int(int64(maxNew)), Temperature: openai.Float(0)}
				for _, m := range convs[i] {
					switch m.Role {
					case "system":
						params.Messages = append(params.Messages, openai.SystemMessage(m.Content))
					case "assistant":
						params.Messages = append(params.Messages, openai.AssistantMessage(m.Content))
					default:
						params.Messages = append(params.Messages, openai.UserMessage(m.Content))
					}
				}
				res, err := c.Chat.Completions.New(ctx, params)
				switch {
				case err != nil:
					cancel(fmt.Errorf("model under test at %s: %w", r.URL, blackbox.APIError(err)))
				case len(res.Choices) == 0:
					cancel(fmt.Errorf("model under test at %s returned no choice", r.URL))
				default:
					out[i] = res.Choices[0].Message.Content
				}
				return
			}
			res, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(r.Model),
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(p)}, MaxTokens: openai.Int(int64(maxNew)),
				Temperature: openai.Float(0), Stop: openai.CompletionNewParamsStopUnion{OfString: openai.String(generate.DefaultStop)}})
			switch {
			case err != nil:
				cancel(fmt.Errorf("model under test at %s: %w", r.URL, blackbox.APIError(err)))
			case len(res.Choices) == 0:
				cancel(fmt.Errorf("model under test at %s returned no choice", r.URL))
			default:
				out[i] = res.Choices[0].Text
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}
