package blackbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
)

// BenchmarkThroughput ranks 256 prompts with concurrency 16 against a loopback server that
// answers after 200 ms; the ideal is 16/0.2 = 80 requests/s.
func BenchmarkThroughput(b *testing.B) {
	s := llmtest.New(func(n int, req llmtest.Request) llmtest.Reply {
		r := llmtest.RankBy(shorterFirst)(n, req)
		r.Delay = 200 * time.Millisecond
		return r
	})
	defer s.Close()
	l, err := NewLLM(LLMConfig{BaseURL: s.BaseURL(), Model: "judge", Concurrency: 16})
	if err != nil {
		b.Fatal(err)
	}
	const prompts = 256
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		var wg sync.WaitGroup
		errs := make(chan error, prompts)
		for i := 0; i < prompts; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, err := l.Rank(context.Background(), Request{Prompt: fmt.Sprintf("p%d-%d", it, i), Candidates: cands}); err != nil {
					errs <- err
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	rps := float64(b.N*prompts) / b.Elapsed().Seconds()
	b.ReportMetric(rps, "requests/s")
	b.ReportMetric(rps/80, "of-ideal")
}
