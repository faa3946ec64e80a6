package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"sort"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cyclealign/cyclealign/internal/serve"
)

// ServeResult is the load one server configuration sustained.
type ServeResult struct {
	Batching     bool    `json:"batching"`
	Clients      int     `json:"clients"`
	Seconds      float64 `json:"seconds"`
	Requests     int     `json:"requests"`
	RequestsPerS float64 `json:"requests_per_s"`
	TokensPerS   float64 `json:"generated_tokens_per_s"`
	P50          float64 `json:"latency_p50_s"`
	P99          float64 `json:"latency_p99_s"`
}

// Serve runs clients concurrent OpenAI clients on loopback against the random-init model for
// dur, each sending completions of 16 new tokens after a 16-token prompt, one after another.
func Serve(ctx context.Context, b backends.Backend, o Options, batching bool, clients int, dur time.Duration) (*ServeResult, error) {
	m, err := RandomModel(b, o)
	if err != nil {
		return nil, err
	}
	so := serve.Options{MaxRows: 64, ModelName: "m"}
	if !batching {
		so.MaxRows = 1
	}
	s := serve.New(m, so)
	hs := httptest.NewServer(s)
	defer func() { hs.Close(); s.Close() }()
	c := openai.NewClient(option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	warm := func(n int64) error {
		_, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "m",
			Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: make([]int64, 16)}, MaxTokens: openai.Int(n)})
		return err
	}
	if err := warm(2); err != nil { // builds the graphs
		return nil, err
	}
	var mu sync.Mutex
	var lat []float64
	tokens := 0
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for k := 0; k < clients; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(k), 5))
			for time.Now().Before(deadline) && ctx.Err() == nil {
				p := make([]int64, 16)
				for i := range p {
					p[i] = int64(3 + rng.IntN(o.Vocab-3))
				}
				t0 := time.Now()
				r, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "m",
					Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: p}, MaxTokens: openai.Int(16), Seed: openai.Int(int64(k))})
				if err != nil {
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0).Seconds())
				tokens += int(r.Usage.CompletionTokens)
				mu.Unlock()
			}
		}(k)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if len(lat) == 0 {
		return nil, fmt.Errorf("no request finished in %v", dur)
	}
	sort.Float64s(lat)
	return &ServeResult{Batching: batching, Clients: clients, Seconds: el, Requests: len(lat), RequestsPerS: float64(len(lat)) / el,
		TokensPerS: float64(tokens) / el, P50: lat[len(lat)/2], P99: lat[min(len(lat)-1, len(lat)*99/100)]}, nil
}

// ServeTable renders serving results.
func ServeTable(rs []*ServeResult) string {
	s := fmt.Sprintf("%-9s %8s %9s %11s %12s %8s %8s\n", "batching", "clients", "requests", "requests/s", "gen tokens/s", "p50 s", "p99 s")
	for _, r := range rs {
		s += fmt.Sprintf("%-9v %8d %9d %11.2f %12.1f %8.2f %8.2f\n", r.Batching, r.Clients, r.Requests, r.RequestsPerS, r.TokensPerS, r.P50, r.P99)
	}
	return s
}
