package eval

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Interval is a mean with a 95% bootstrap confidence interval.
type Interval struct {
	Mean float64 `json:"mean"`
	Lo   float64 `json:"ci95_lo"`
	Hi   float64 `json:"ci95_hi"`
	N    int     `json:"n"`
}

// Rate is k of n as a fraction, 0 when there are no cases.
func Rate(k, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(k) / float64(n)
}

// Bootstrap returns the mean of xs and the 2.5 and 97.5 percentiles of the means of 2000
// resamples with replacement (seeded, so reports are reproducible).
func Bootstrap(xs []float64, seed uint64) Interval {
	return BootstrapStat(len(xs), seed, func(idx []int) float64 {
		s := 0.0
		for _, i := range idx {
			s += xs[i]
		}
		return s / float64(len(idx))
	})
}

// BootstrapStat bootstraps any statistic of n items computed from a list of item indices.
func BootstrapStat(n int, seed uint64, stat func(idx []int) float64) Interval {
	if n == 0 {
		return Interval{Mean: math.NaN(), Lo: math.NaN(), Hi: math.NaN()}
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	out := Interval{Mean: stat(all), N: n}
	const resamples = 2000
	rng := rand.New(rand.NewPCG(seed, 0xb007))
	ms := make([]float64, resamples)
	idx := make([]int, n)
	for r := range ms {
		for i := range idx {
			idx[i] = rng.IntN(n)
		}
		ms[r] = stat(idx)
	}
	sort.Float64s(ms)
	out.Lo, out.Hi = ms[int(0.025*resamples)], ms[int(0.975*resamples)-1]
	return out
}

// Outcome is one judgment of model against baseline.
type Outcome int

// The outcomes.
const (
	Loss Outcome = iota
	Tie
	Win
)

// WinRate scores per-prompt judgments made in both orders: a win counts 1, a tie (or a
// judgment that could not be made) 1/2, a loss 0; each prompt scores the mean of its two
// judgments, and the rate is bootstrapped over prompts.
func WinRate(judgments [][2]Outcome, seed uint64) (rate Interval, wins, ties, losses int) {
	scores := make([]float64, len(judgments))
	for i, j := range judgments {
		for _, o := range j {
			switch o {
			case Win:
				wins++
			case Tie:
				ties++
			default:
				losses++
			}
			scores[i] += float64(o) / 4
		}
	}
	return Bootstrap(scores, seed), wins, ties, losses
}

// Quantiles are min, 25%, median, 75% and max.
func Quantiles(xs []float64) [5]float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	var q [5]float64
	if len(s) == 0 {
		return q
	}
	for i, p := range []float64{0, 0.25, 0.5, 0.75, 1} {
		q[i] = s[int(math.Round(p*float64(len(s)-1)))]
	}
	return q
}
