package blackbox

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
)

var (
	jsonList  = regexp.MustCompile(`\[\s*\d+(?:\s*,\s*\d+)*\s*\]`)
	rankItem  = regexp.MustCompile(`^\s*(?:\[\s*(\d+)\s*\]|\(\s*(\d+)\s*\)|(\d+))\s*$`)
	separator = regexp.MustCompile(`\s*(?:>|≻|,|;)\s*`)
)

// ParseRanking reads a ranking of n labels from a reply and returns it 0-based (label 1 is 0),
// or false if the reply holds no permutation of 1..n. It accepts "[3] > [1] > [4] > [2]",
// "3 > 1 > 4 > 2", "[3], [1], [4], [2]", a JSON list "[3, 1, 4, 2]", and a ranking line after
// some reasoning (the last line that parses wins).
func ParseRanking(reply string, n int) ([]int, bool) {
	lines := strings.Split(strings.TrimSpace(reply), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(strings.Trim(strings.TrimSpace(lines[i]), "`*.")) // markdown emphasis, trailing period
		if k := strings.LastIndex(line, ":"); k >= 0 && k < len(line)-1 {
			if r, ok := parseLine(line[k+1:], n); ok {
				return r, true
			}
		}
		if r, ok := parseLine(line, n); ok {
			return r, true
		}
	}
	return nil, false
}

func parseLine(line string, n int) ([]int, bool) {
	line = strings.TrimSpace(line)
	for _, m := range jsonList.FindAllString(line, -1) {
		var xs []int
		if json.Unmarshal([]byte(m), &xs) == nil {
			if r, ok := permutation(xs, n); ok {
				return r, true
			}
		}
	}
	parts := separator.Split(line, -1)
	if len(parts) != n {
		return nil, false
	}
	xs := make([]int, 0, n)
	for _, p := range parts {
		m := rankItem.FindStringSubmatch(p)
		if m == nil {
			return nil, false
		}
		v, _ := strconv.Atoi(m[1] + m[2] + m[3])
		xs = append(xs, v)
	}
	return permutation(xs, n)
}

// permutation checks xs is a permutation of 1..n and returns it 0-based.
func permutation(xs []int, n int) ([]int, bool) {
	if len(xs) != n {
		return nil, false
	}
	seen := make([]bool, n)
	out := make([]int, n)
	for i, x := range xs {
		if x < 1 || x > n || seen[x-1] {
			return nil, false
		}
		seen[x-1] = true
		out[i] = x - 1
	}
	return out, true
}
