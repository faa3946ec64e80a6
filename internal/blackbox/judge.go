package blackbox

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"

	"github.com/cyclealign/cyclealign/internal/chat"
)

// Scorer scores each response after its prompt, higher better: a reward model, a lexicon.
type Scorer interface {
	ScorePairs(ctx context.Context, prompts, responses []string) ([]float64, error)
	Describe() string
}

// ChatScorer is a Scorer that reads a conversation as such: a reward model with a chat
// template scores the conversation with the reply as its last assistant turn, rendered.
type ChatScorer interface {
	ScoreChats(ctx context.Context, convs [][]chat.Message, responses []string) ([]float64, error)
}

// ScoreReplies scores each response to its prompt: by the conversation (convs[i], when the
// prompts are conversations) where the scorer reads conversations, else by the prompt's text.
func ScoreReplies(ctx context.Context, s Scorer, prompts []string, convs [][]chat.Message, responses []string) ([]float64, error) {
	if cs, ok := s.(ChatScorer); ok && len(convs) > 0 && convs[0] != nil {
		return cs.ScoreChats(ctx, convs, responses)
	}
	return s.ScorePairs(ctx, prompts, responses)
}

// Judge ranks candidates by a Scorer and, like an in-context learner, lets its demonstrations
// move the ranking: each candidate gains DemoWeight times its mean, over the demonstrations,
// of (similarity to the candidate the demonstration ranks first) minus (similarity to the one it
// ranks last), similarity being the cosine of word unigram and bigram counts. With no
// demonstrations, or DemoWeight 0, it ranks by the Scorer alone.
type Judge struct {
	Scorer     Scorer
	DemoWeight float64
}

// Describe implements Ranker.
func (j *Judge) Describe() string {
	if j.DemoWeight == 0 {
		return fmt.Sprintf("%s; ignores demonstrations", j.Scorer.Describe())
	}
	return fmt.Sprintf("judge: %s, plus %g x (similarity to demonstrations' best - to their worst)", j.Scorer.Describe(), j.DemoWeight)
}

// Scores returns the judge's score of each candidate for req (the Scorer's plus the
// demonstrations' pull).
func (j *Judge) Scores(ctx context.Context, req Request) ([]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prompts := make([]string, len(req.Candidates))
	convs := make([][]chat.Message, len(req.Candidates))
	for i := range prompts {
		prompts[i], convs[i] = req.Prompt, req.Conversation
	}
	s, err := ScoreReplies(ctx, j.Scorer, prompts, convs, req.Candidates)
	if err != nil {
		return nil, err
	}
	if j.DemoWeight == 0 {
		return s, nil
	}
	var best, worst []bag
	for _, d := range req.Demos {
		if d.Validate() != nil {
			continue
		}
		best = append(best, bagOf(d.Candidates[d.Ranking[0]]))
		worst = append(worst, bagOf(d.Candidates[d.Ranking[len(d.Ranking)-1]]))
	}
	if len(best) == 0 {
		return s, nil
	}
	for i, c := range req.Candidates {
		b, pull := bagOf(c), 0.0
		for k := range best {
			pull += b.cosine(best[k]) - b.cosine(worst[k])
		}
		s[i] += j.DemoWeight * pull / float64(len(best))
	}
	return s, nil
}

// Rank implements Ranker: highest score first, ties in candidate order.
func (j *Judge) Rank(ctx context.Context, req Request) (*Result, error) {
	if len(req.Candidates) < 2 {
		return nil, fmt.Errorf("ranking needs at least 2 candidates, got %d", len(req.Candidates))
	}
	s, err := j.Scores(ctx, req)
	if err != nil {
		return nil, err
	}
	perm := make([]int, len(s))
	for i := range perm {
		perm[i] = i
	}
	return &Result{Ranking: Order(s), Raw: []string{fmt.Sprintf("scores %v", s)}, Permutation: perm, Rewards: s}, nil
}

// Order ranks scores: indices best first, ties in index order.
func Order(scores []float64) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	return idx
}

var wordRE = regexp.MustCompile(`[\p{L}\p{N}']+`)

// bag counts a text's lower-cased words and adjacent word pairs.
type bag map[string]float64

func bagOf(s string) bag {
	ws := wordRE.FindAllString(strings.ToLower(s), -1)
	b := bag{}
	for i, w := range ws {
		b[w]++
		if i > 0 {
			b[ws[i-1]+" "+w]++
		}
	}
	return b
}

func (b bag) cosine(o bag) float64 {
	var dot, nb, no float64
	for k, v := range b {
		dot += v * o[k]
		nb += v * v
	}
	for _, v := range o {
		no += v * v
	}
	if nb == 0 || no == 0 {
		return 0
	}
	return dot / math.Sqrt(nb*no)
}
