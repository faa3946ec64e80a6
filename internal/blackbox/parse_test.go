package blackbox

import (
	"slices"
	"testing"
)

func TestParseRanking(t *testing.T) {
	want := []int{2, 0, 3, 1}
	for _, reply := range []string{
		"[3] > [1] > [4] > [2]",
		"3 > 1 > 4 > 2",
		"[3, 1, 4, 2]",
		"[3], [1], [4], [2]",
		"Ranking: [3] > [1] > [4] > [2].",
		"Candidate [1] is polite but [3] is more accurate; [2] is rude.\nSo overall:\n**[3] > [1] > [4] > [2]**",
		"```\n3 > 1 > 4 > 2\n```",
		"(3) > (1) > (4) > (2)",
		"[3] ≻ [1] ≻ [4] ≻ [2]",
	} {
		got, ok := ParseRanking(reply, 4)
		if !ok || !slices.Equal(got, want) {
			t.Errorf("ParseRanking(%q) = %v %v", reply, got, ok)
		}
	}
	for _, reply := range []string{
		"", "I cannot rank these.", "[3] > [1] > [2]", "[3] > [1] > [1] > [2]", "[5] > [1] > [4] > [2]",
		"[0] > [1] > [2] > [3]", "1 2 3 4 5",
	} {
		if got, ok := ParseRanking(reply, 4); ok {
			t.Errorf("ParseRanking(%q) accepted %v", reply, got)
		}
	}
}

func TestLCS(t *testing.T) {
	for _, c := range []struct{ a, b, want []int }{
		{[]int{0, 1, 2, 3}, []int{0, 1, 2, 3}, []int{0, 1, 2, 3}},
		{[]int{0, 1, 2, 3}, []int{3, 2, 1, 0}, []int{0}},
		{[]int{2, 0, 3, 1}, []int{2, 3, 0, 1}, []int{2, 0, 1}},
		{[]int{1}, []int{1}, []int{1}},
		{[]int{0, 1}, []int{1, 0}, []int{0}},
	} {
		if got := LCS(c.a, c.b); !slices.Equal(got, c.want) {
			t.Errorf("LCS(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
