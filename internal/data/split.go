package data

import "math/rand/v2"

// Splits are the disjoint parts of a preference set the embedded default is built from.
type Splits struct {
	Base      []Pair // dialogue text (chosen and rejected) the base model is pre-trained on
	Judge     []Pair // pairs for a judge to learn from; the demo's evaluator learns from their labels
	Evaluator []Pair // pairs for an evaluator to learn from (never seen in alignment)
	Align     []Pair // prompts CycleAlign runs on
	Test      []Pair // held-out prompts and pairs for evaluation
}

// SplitSeed fixes the default split.
const SplitSeed = 20231026

// Split shuffles pairs with a fixed seed and cuts them 40% / 20% / 20% / 12.5% / the rest
// into base, judge, evaluator, align and test.
func Split(pairs []Pair) Splits {
	perm := rand.New(rand.NewPCG(SplitSeed, 0)).Perm(len(pairs))
	shuffled := make([]Pair, len(pairs))
	for i, j := range perm {
		shuffled[i] = pairs[j]
	}
	n := len(pairs)
	cuts := []int{n * 40 / 100, n * 60 / 100, n * 80 / 100, n * 925 / 1000}
	// Capacities end at each cut, so appending to one part copies it rather than overwriting the
	// next.
	return Splits{Base: shuffled[:cuts[0]:cuts[0]], Judge: shuffled[cuts[0]:cuts[1]:cuts[1]], Evaluator: shuffled[cuts[1]:cuts[2]:cuts[2]],
		Align: shuffled[cuts[2]:cuts[3]:cuts[3]], Test: shuffled[cuts[3]:]}
}

// Prompts returns the prompts of pairs.
func Prompts(pairs []Pair) []string {
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.Prompt
	}
	return out
}
