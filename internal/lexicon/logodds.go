package lexicon

import (
	"context"
	"fmt"
	"math"

	"github.com/cyclealign/cyclealign/internal/data"
)

// LogOdds is a word lexicon learned from human preference labels: each word's weight is the
// z-scored log-odds ratio of its use in human-chosen against human-rejected replies, with an
// informative Dirichlet prior from background text (Monroe, Colaresi and Quinn 2008, "Fightin'
// Words"), so that rare words do not dominate. A reply scores the mean weight of its words
// (unknown words 0). It ignores the prompt. The demo's evaluator: it learns from other data by
// other means than the judge.
type LogOdds struct {
	z     map[string]float64
	pairs int
}

// LogOddsPrior is the prior's strength in pseudo-words, spread over the vocabulary in
// proportion to the background counts.
const LogOddsPrior = 500

// NewLogOdds learns the weights from pairs' chosen and rejected replies, with the prior drawn
// from background texts (their vocabulary is the lexicon's).
func NewLogOdds(pairs []data.Pair, background []string) *LogOdds {
	chosen, rejected, bg := map[string]float64{}, map[string]float64{}, map[string]float64{}
	var nc, nr, nb float64
	for _, p := range pairs {
		for _, w := range tokens(p.Chosen) {
			chosen[w]++
			nc++
		}
		for _, w := range tokens(p.Rejected) {
			rejected[w]++
			nr++
		}
	}
	for _, s := range background {
		for _, w := range tokens(s) {
			bg[w]++
			nb++
		}
	}
	z := make(map[string]float64, len(bg))
	for w, n := range bg {
		a := LogOddsPrior * n / nb
		lc := math.Log((chosen[w] + a) / (nc + LogOddsPrior - chosen[w] - a))
		lr := math.Log((rejected[w] + a) / (nr + LogOddsPrior - rejected[w] - a))
		z[w] = (lc - lr) / math.Sqrt(1/(chosen[w]+a)+1/(rejected[w]+a))
	}
	return &LogOdds{z: z, pairs: len(pairs)}
}

// Weight is word's learned weight (0 for a word outside the background vocabulary).
func (l *LogOdds) Weight(word string) float64 { return l.z[word] }

// Score is the mean weight of reply's words.
func (l *LogOdds) Score(reply string) float64 {
	ws := tokens(reply)
	if len(ws) == 0 {
		return 0
	}
	s := 0.0
	for _, w := range ws {
		s += l.z[w]
	}
	return s / float64(len(ws))
}

// ScorePairs scores every reply.
func (l *LogOdds) ScorePairs(_ context.Context, _, replies []string) ([]float64, error) {
	return each(replies, l.Score), nil
}

// Describe says what the evaluator is.
func (l *LogOdds) Describe() string {
	return fmt.Sprintf("human-preference word log-odds (Monroe et al. 2008) from %d human-labelled pairs (mean word weight of the reply)", l.pairs)
}
