package eval

import (
	"math/rand/v2"
	"testing"
)

// TestBootstrapCoverage: in a simulated case (normal samples with a known mean), the 95%
// interval covers the true mean in about 95% of repetitions.
func TestBootstrapCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	covered := 0
	const reps = 200
	for r := 0; r < reps; r++ {
		xs := make([]float64, 60)
		for i := range xs {
			xs[i] = 3 + 2*rng.NormFloat64()
		}
		iv := Bootstrap(xs, uint64(r))
		if iv.Lo <= 3 && 3 <= iv.Hi {
			covered++
		}
		if !(iv.Lo < iv.Mean && iv.Mean < iv.Hi) {
			t.Fatalf("interval %+v does not contain its mean", iv)
		}
	}
	if covered < 176 || covered > 199 { // 95% of 200 = 190, binomial sd ~3; percentile CIs run a little narrow
		t.Fatalf("covered the true mean %d times of %d", covered, reps)
	}
}

func TestWinRateBookkeeping(t *testing.T) {
	j := [][2]Outcome{{Win, Win}, {Win, Loss}, {Tie, Tie}, {Loss, Loss}, {Win, Tie}}
	rate, w, ti, l := WinRate(j, 1)
	if w != 4 || ti != 3 || l != 3 {
		t.Fatalf("counts %d/%d/%d", w, ti, l)
	}
	// Per prompt: 1, 0.5, 0.5, 0, 0.75 -> mean 0.55.
	if rate.Mean < 0.5499 || rate.Mean > 0.5501 || rate.N != 5 {
		t.Fatalf("rate %+v", rate)
	}
	if q := Quantiles([]float64{5, 1, 3, 2, 4}); q != [5]float64{1, 2, 3, 4, 5} {
		t.Fatalf("quantiles %v", q)
	}
}

func TestDiversity(t *testing.T) {
	// Bigrams: "a b", "b c" | "a b", "b c" | "a a", "a a" -> 3 distinct of 6. "x" has none.
	d2, u := Diversity([]string{"a b c", "A b c", "a a a", "x", " x"})
	// Responses compare as trimmed text: "x" and " x" are the same reply, the rest differ.
	if d2 != 0.5 || u != 0.6 {
		t.Fatalf("distinct-2 %v (want 0.5), unique %v (want 3/5)", d2, u)
	}
}
