package eval

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/model"
)

// vowels scores a reply by its share of vowels: a reward that separates random models' replies.
type vowels struct{ calls int }

func (v *vowels) ScorePairs(_ context.Context, _, rs []string) ([]float64, error) {
	v.calls++
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = float64(strings.Count(r, "a")+strings.Count(r, "e")+strings.Count(r, "o")) / float64(len(r)+1)
	}
	return out, nil
}

func (v *vowels) Describe() string { return "vowel share" }

// TestBaselineReportStandsInForTheBaseline: evaluating against the baseline's own report gives
// what evaluating against the baseline model gives, without generating or scoring it again.
func TestBaselineReportStandsInForTheBaseline(t *testing.T) {
	b, _ := model.NewBackend()
	load := func(name string) *model.Model {
		m, err := model.Load(b, filepath.Join("..", "..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m, base := load("tiny-gpt2-bytelevel"), load("tiny-llama-metaspace")
	prompts := []string{"\n\nHuman: Hi\n\nAssistant:", "\n\nHuman: What is the capital of France?\n\nAssistant:",
		"\n\nHuman: How do I bake bread?\n\nAssistant:", "\n\nHuman: Tell me a joke.\n\nAssistant:"}
	ctx := context.Background()
	rm := &vowels{}
	full, err := Run(ctx, Options{Model: m, Baseline: base, RewardModel: rm, Prompts: prompts, MaxNewTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	fullCalls := rm.calls
	br, err := Run(ctx, Options{Model: base, RewardModel: rm, Prompts: prompts, MaxNewTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	calls := rm.calls
	reused, err := Run(ctx, Options{Model: m, BaselineReport: br, RewardModel: rm, Prompts: prompts, MaxNewTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	if rm.calls-calls != fullCalls-1 {
		t.Fatalf("%d reward calls with the baseline's report, %d without: its replies were scored again", rm.calls-calls, fullCalls)
	}
	if full.Wins+full.Losses == 0 || !reflect.DeepEqual(full.Samples, reused.Samples) ||
		*full.WinRate != *reused.WinRate || *full.BaselineReward != *reused.BaselineReward {
		t.Fatalf("against the model: %+v %+v\nagainst its report: %+v %+v", full.WinRate, full.Samples, reused.WinRate, reused.Samples)
	}
	if _, err := Run(ctx, Options{Model: m, BaselineReport: br, RewardModel: rm, Prompts: prompts[1:], MaxNewTokens: 12}); err == nil ||
		!strings.Contains(err.Error(), "4 samples for 3 prompts") {
		t.Fatalf("a report of other prompts: %v", err)
	}
}

// TestRewardOutcomesMatchTheJudge: outcomes read off the rewards are the ones a judge of the
// same scorer gives in both orders, equal rewards and identical replies included.
func TestRewardOutcomesMatchTheJudge(t *testing.T) {
	a := []string{"aaaa", "xyz", "hello", "same", "bob", "q"}
	b := []string{"xyz", "aaaa", "hallo", "same", "pop", "eeee"}
	rm := &vowels{}
	ps := make([]string, len(a))
	ra, _ := rm.ScorePairs(context.Background(), ps, a)
	rb, _ := rm.ScorePairs(context.Background(), ps, b)
	if ra[2] != rb[2] || ra[4] != rb[4] {
		t.Fatalf("the cases need equal rewards of different replies: %v %v", ra, rb)
	}
	want, err := judgeBothOrders(context.Background(), &blackbox.Judge{Scorer: rm}, ps, nil, a, b, 0, func(float64) {})
	if err != nil {
		t.Fatal(err)
	}
	if got := rewardOutcomes(a, b, ra, rb); !reflect.DeepEqual(got, want) {
		t.Fatalf("from the rewards %v, from the judge %v", got, want)
	}
}

func TestRunNeedsPrompts(t *testing.T) {
	if _, err := Run(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "no prompts") {
		t.Fatalf("no prompts: %v, want an error (it printed a table of dashes)", err)
	}
}
