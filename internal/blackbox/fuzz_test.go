package blackbox

import "testing"

// FuzzParseRanking: whatever the black-box replies, the parser returns either a permutation
// of 0..n-1 or nothing.
func FuzzParseRanking(f *testing.F) {
	for _, s := range []string{"[3] > [1] > [4] > [2]", "3 > 1 > 4 > 2", "[3, 1, 4, 2]", "Reasoning...\nRanking: [2] > [1] > [3] > [4].",
		"**[1]** > [2]", "[99999999999999999999, 1]", "1 > 1 > 2 > 3", ": : :", "[-1, 2, 3, 4]"} {
		f.Add(s, 4)
	}
	f.Fuzz(func(t *testing.T, reply string, n int) {
		n = n%12 + 1
		if n < 1 {
			n += 12
		}
		r, ok := ParseRanking(reply, n)
		if !ok {
			return
		}
		seen := make([]bool, n)
		for _, x := range r {
			if x < 0 || x >= n || seen[x] {
				t.Fatalf("%q (n=%d): %v is not a permutation", reply, n, r)
			}
			seen[x] = true
		}
		if len(r) != n {
			t.Fatalf("%q (n=%d): %v has the wrong length", reply, n, r)
		}
	})
}
