package lexicon

import (
	"context"
	"math"
	"testing"

	"github.com/cyclealign/cyclealign/internal/data"
)

func TestLogOddsWeights(t *testing.T) {
	pairs := []data.Pair{{Chosen: "sorry sorry no", Rejected: "sure no"}, {Chosen: "no", Rejected: "sure sure"}}
	background := []string{"sorry sure no", "no no maybe"}
	l := NewLogOdds(pairs, background)
	// By hand: chosen counts sorry 2, no 2 (n=4); rejected sure 3, no 1 (n=4); background
	// sorry 1, sure 1, no 3, maybe 1 (n=6); prior 500, so a_w = 500 n_w / 6.
	z := func(c, r, nw float64) float64 {
		a := 500 * nw / 6
		lc := math.Log((c + a) / (4 + 500 - c - a))
		lr := math.Log((r + a) / (4 + 500 - r - a))
		return (lc - lr) / math.Sqrt(1/(c+a)+1/(r+a))
	}
	for w, want := range map[string]float64{"sorry": z(2, 0, 1), "sure": z(0, 3, 1), "no": z(2, 1, 3), "maybe": 0, "unseen": 0} {
		if got := l.Weight(w); math.Abs(got-want) > 1e-12 {
			t.Errorf("weight(%s) = %v, want %v", w, got, want)
		}
	}
	if !(l.Weight("sorry") > 0 && l.Weight("sure") < 0) {
		t.Fatalf("chosen words up, rejected down: %v %v", l.Weight("sorry"), l.Weight("sure"))
	}
	// Swapping the labels negates every weight.
	swapped := NewLogOdds([]data.Pair{{Chosen: "sure no", Rejected: "sorry sorry no"}, {Chosen: "sure sure", Rejected: "no"}}, background)
	for _, w := range []string{"sorry", "sure", "no"} {
		if math.Abs(swapped.Weight(w)+l.Weight(w)) > 1e-12 {
			t.Errorf("swapped weight(%s) = %v, want %v", w, swapped.Weight(w), -l.Weight(w))
		}
	}
	// A reply scores its words' mean weight, unknown words counting 0.
	s, _ := l.ScorePairs(context.Background(), nil, []string{"Sorry, unseen!", "", "sure"})
	if want := l.Weight("sorry") / 2; math.Abs(s[0]-want) > 1e-12 || s[1] != 0 || s[2] != l.Weight("sure") {
		t.Fatalf("scores %v, want [%v 0 %v]", s, want, l.Weight("sure"))
	}
}
