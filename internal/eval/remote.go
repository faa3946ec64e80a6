package eval

import (
	"context"
	"fmt"
	"sync"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/openaiapi"
)

// Remote is a model under test behind an OpenAI-compatible server (for instance cyclealign
// serve, or vLLM).
type Remote struct {
	URL, Model, APIKey string
	Concurrency        int // requests in flight (0: the client's default), as a batching server wants them
}

// greedy asks for temperature-0 replies: completions that stop at the next human turn for text
// prompts, chat completions for conversations (the server renders its template). The first
// failure cancels the requests still to come and is returned.
func (r *Remote) greedy(ctx context.Context, prompts []string, convs [][]chat.Message, maxNew int) ([]string, error) {
	c := openaiapi.New(openaiapi.Options{URL: r.URL, Key: r.APIKey, Concurrency: r.Concurrency})
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			if ctx.Err() != nil {
				return
			}
			var err error
			if convs != nil {
				out[i], _, err = c.Chat(ctx, openaiapi.ChatRequest{Model: r.Model, Messages: convs[i], MaxTokens: maxNew, Temperature: new(float64)})
			} else {
				var ch []openaiapi.Choice
				ch, _, err = c.Completions(ctx, openaiapi.CompletionRequest{Model: r.Model, Prompt: p, MaxTokens: maxNew, Stop: []string{generate.DefaultStop}})
				if err == nil {
					out[i] = ch[0].Text
				}
			}
			if err != nil {
				cancel(fmt.Errorf("model under test: %w", err))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}
