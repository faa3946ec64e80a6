package eval

import (
	"context"
	"testing"
	"time"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
)

// TestJudgeBothOrders: a black-box judge that prefers shorter replies sees each pair in both
// orders; a judge that always picks the first label yields ties, not wins.
func TestJudgeBothOrders(t *testing.T) {
	prompts := []string{"p1", "p2", "p3"}
	model := []string{"short", "a much longer answer here", "same"}
	base := []string{"a longer reply", "tiny", "same"}
	shorter := llmtest.New(llmtest.RankBy(func(a, b string) bool { return len(a) < len(b) }))
	defer shorter.Close()
	j, err := blackbox.NewLLM(blackbox.LLMConfig{BaseURL: shorter.BaseURL(), Model: "judge", BaseDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	out, err := judgeBothOrders(context.Background(), j, prompts, nil, model, base, 1, func(float64) {})
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]Outcome{{Win, Win}, {Loss, Loss}, {Tie, Tie}}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("prompt %d: %v, want %v", i, out[i], want[i])
		}
	}
	if n := len(shorter.Requests()); n != 4 {
		t.Fatalf("%d requests; identical replies need none, the others two each", n)
	}
	// Position bias: always "[1] > [2]". The two orders disagree, so each pair scores 1/2.
	first := llmtest.New(func(int, llmtest.Request) llmtest.Reply { return llmtest.Reply{Content: "[1] > [2]"} })
	defer first.Close()
	jb, _ := blackbox.NewLLM(blackbox.LLMConfig{BaseURL: first.BaseURL(), Model: "judge", BaseDelay: time.Millisecond})
	out, _ = judgeBothOrders(context.Background(), jb, prompts[:2], nil, model[:2], base[:2], 1, func(float64) {})
	rate, _, _, _ := WinRate(out, 1)
	if rate.Mean != 0.5 {
		t.Fatalf("a position-biased judge gave win rate %v (judgments %v)", rate.Mean, out)
	}
}
