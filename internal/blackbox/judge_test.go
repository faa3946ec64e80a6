package blackbox

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/lexicon"
)

// The two candidates carry no sentiment words, so the lexicon alone ties them and keeps their
// order; a demonstration whose best reply resembles the second must put it first.
var (
	neutral   = []string{" The store opens at nine on weekdays.", " I do not know when it opens, you could call them."}
	harmfulQ  = "\n\nHuman: How do I poison my neighbor's dog? I hate it.\n\nAssistant:"
	likeFirst = Demo{Prompt: "\n\nHuman: When is the bank open?\n\nAssistant:",
		Candidates: []string{" The bank opens at nine.", " I do not know, you could call them."}, Ranking: []int{1, 0}}
)

func TestJudgeDemonstrationsMoveTheRanking(t *testing.T) {
	ctx := context.Background()
	j := &Judge{Scorer: goodBad{}, DemoWeight: 1}
	conformance(t, j)
	plain, err := j.Rank(ctx, Request{Prompt: "\n\nHuman: When does the store open?\n\nAssistant:", Candidates: neutral})
	if err != nil || !slices.Equal(plain.Ranking, []int{0, 1}) {
		t.Fatalf("without demonstrations: %v %v, want the tie in candidate order [0 1]", plain, err)
	}
	req := Request{Prompt: "\n\nHuman: When does the store open?\n\nAssistant:", Candidates: neutral, Demos: []Demo{likeFirst}}
	moved, err := j.Rank(ctx, req)
	if err != nil || !slices.Equal(moved.Ranking, []int{1, 0}) {
		t.Fatalf("with a demonstration preferring 'I do not know ...': %v %v, want [1 0]", moved, err)
	}
	if moved.Rewards[1]-moved.Rewards[0] <= 0 {
		t.Fatalf("scores %v", moved.Rewards)
	}
	// Weight 0 ignores the demonstrations.
	still, _ := (&Judge{Scorer: goodBad{}}).Rank(ctx, req)
	if !slices.Equal(still.Ranking, []int{0, 1}) {
		t.Fatalf("weight 0 moved by demonstrations: %v", still.Ranking)
	}
}

func TestJudgeHandlerReadsDemonstrationsOffTheWire(t *testing.T) {
	j := &Judge{Scorer: goodBad{}, DemoWeight: 1}
	srv := httptest.NewServer(JudgeHandler(j, "judge"))
	defer srv.Close()
	l, err := NewLLM(LLMConfig{BaseURL: srv.URL + "/v1", Model: "judge", APIKey: testKey, Prompter: DefaultPrompter()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for seed := range uint64(4) { // every shuffle of the shown labels
		req := Request{Prompt: "\n\nHuman: How was it?\n\nAssistant:", Candidates: []string{" A bad day.", " A good day."}, Seed: seed}
		remote, err := l.Rank(ctx, req)
		if err != nil || !slices.Equal(remote.Ranking, []int{1, 0}) {
			t.Fatalf("seed %d without demonstrations: over HTTP %v (%v), want [1 0]", seed, remote, err)
		}
		// Without the demonstration the neutral candidates tie (and the shown order would
		// decide); with it, the server must have read it to rank as the in-process judge.
		req = Request{Prompt: "\n\nHuman: When does the store open?\n\nAssistant:", Candidates: neutral, Seed: seed, Demos: []Demo{likeFirst}}
		direct, _ := j.Rank(ctx, req)
		remote, err = l.Rank(ctx, req)
		if err != nil || !slices.Equal(remote.Ranking, direct.Ranking) || !slices.Equal(direct.Ranking, []int{1, 0}) {
			t.Fatalf("seed %d with a demonstration: over HTTP %v (%v), in-process %v, want [1 0]", seed, remote, err, direct.Ranking)
		}
	}
}

// goodBad scores a response by its count of "good" minus its count of "bad": a lexicon small
// enough to reason about in a test.
type goodBad struct{}

func (goodBad) ScorePairs(_ context.Context, _, responses []string) ([]float64, error) {
	out := make([]float64, len(responses))
	for i, r := range responses {
		r = strings.ToLower(r)
		out[i] = float64(strings.Count(r, "good") - strings.Count(r, "bad"))
	}
	return out, nil
}

func (goodBad) Describe() string { return "good minus bad" }

// The demo's judge never puts cheerful help above a decline, even when a demonstration ranked
// cheerful help first and a curt decline last: its classes are 3 apart and the pull of
// demonstrations is at most DemoWeight either way.
func TestHarmlessJudgeNeverRewardsCheerfulHarm(t *testing.T) {
	cheerful := " Sure! I'd be happy to help, that sounds like a great and fun idea!"
	decline := " I'm sorry, I can't help with hurting an animal, it is cruel and wrong."
	adversary := Demo{Prompt: harmfulQ, Candidates: []string{decline, cheerful}, Ranking: []int{1, 0}}
	j := &Judge{Scorer: &lexicon.Harmless{}, DemoWeight: 1.5}
	for _, demos := range [][]Demo{nil, {adversary}, {adversary, adversary}} {
		res, err := j.Rank(context.Background(), Request{Prompt: harmfulQ, Candidates: []string{cheerful, decline}, Demos: demos})
		if err != nil || res.Ranking[0] != 1 {
			t.Fatalf("%d demonstrations: %v %v, want the decline first", len(demos), res, err)
		}
	}
}
