// Package eval measures aligned models as the paper does: reward of greedy responses under a
// held-out reward model, win rate against a baseline (both orders, ties counted), preference
// accuracy on chosen/rejected pairs, corpus BLEU against the chosen responses, and perplexity,
// with bootstrap confidence intervals.
package eval

import (
	"math"
	"regexp"
	"strings"
)

var (
	tok13aPunct = regexp.MustCompile(`([\{-\~\[-\` + "`" + ` -\&\(-\+\:-\@\/])`)
	tok13aDotL  = regexp.MustCompile(`([^0-9])([\.,])`)
	tok13aDotR  = regexp.MustCompile(`([\.,])([^0-9])`)
	tok13aDash  = regexp.MustCompile(`([0-9])(-)`)
)

// Tokenize13a is the mteval-v13a tokenisation sacreBLEU uses by default.
func Tokenize13a(s string) []string {
	s = strings.ReplaceAll(s, "<skipped>", "")
	s = strings.ReplaceAll(s, "-\n", "")
	s = strings.ReplaceAll(s, "\n", " ")
	s = " " + s + " "
	s = tok13aPunct.ReplaceAllString(s, " $1 ")
	s = tok13aDotL.ReplaceAllString(s, "$1 $2 ")
	s = tok13aDotR.ReplaceAllString(s, " $1 $2")
	s = tok13aDash.ReplaceAllString(s, "$1 $2 ")
	return strings.Fields(s)
}

// BLEUStats are corpus counts: clipped n-gram matches and totals for n = 1..4, and lengths.
type BLEUStats struct {
	Matches, Totals [4]int
	HypLen, RefLen  int
}

func ngrams(toks []string, n int) map[string]int {
	out := map[string]int{}
	for i := 0; i+n <= len(toks); i++ {
		out[strings.Join(toks[i:i+n], "\x00")]++
	}
	return out
}

// Add accumulates one hypothesis against its references (already tokenised): n-gram counts are
// clipped by the largest count in any reference, and the reference length is the one closest
// to the hypothesis (the shorter on ties), as in Papineni et al. and sacreBLEU.
func (s *BLEUStats) Add(hyp []string, refs [][]string) {
	s.HypLen += len(hyp)
	best := -1
	for _, r := range refs {
		d, bd := abs(len(r)-len(hyp)), abs(best-len(hyp))
		if best < 0 || d < bd || d == bd && len(r) < best {
			best = len(r)
		}
	}
	s.RefLen += max(best, 0)
	for n := 1; n <= 4; n++ {
		maxRef := map[string]int{}
		for _, r := range refs {
			for g, c := range ngrams(r, n) {
				maxRef[g] = max(maxRef[g], c)
			}
		}
		for g, c := range ngrams(hyp, n) {
			s.Matches[n-1] += min(c, maxRef[g])
		}
		s.Totals[n-1] += max(0, len(hyp)-n+1)
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// Score is corpus BLEU-4 in [0, 100]: the geometric mean of the four precisions times the
// brevity penalty exp(1 - ref/hyp) when the hypotheses are shorter. No smoothing: a zero
// precision gives 0.
func (s BLEUStats) Score() float64 {
	logSum := 0.0
	for n := 0; n < 4; n++ {
		if s.Matches[n] == 0 || s.Totals[n] == 0 {
			return 0
		}
		logSum += math.Log(float64(s.Matches[n]) / float64(s.Totals[n]))
	}
	bp := 1.0
	if s.HypLen < s.RefLen {
		if s.HypLen == 0 {
			return 0
		}
		bp = math.Exp(1 - float64(s.RefLen)/float64(s.HypLen))
	}
	return 100 * bp * math.Exp(logSum/4)
}

// CorpusBLEU scores hypotheses against one or more references each, with 13a tokenisation.
func CorpusBLEU(hyps []string, refs [][]string) float64 {
	var s BLEUStats
	for i, h := range hyps {
		var rt [][]string
		for _, r := range refs[i] {
			rt = append(rt, Tokenize13a(r))
		}
		s.Add(Tokenize13a(h), rt)
	}
	return s.Score()
}
