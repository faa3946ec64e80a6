package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/cyclealign/cyclealign/internal/files"
)

// Ranked is one prompt with candidates ranked best first.
type Ranked struct {
	Prompt     string    `json:"prompt"`
	Candidates []string  `json:"candidates"`
	Rewards    []float64 `json:"rewards,omitempty"` // the candidates' rewards, best first, when known
}

// rankedLine accepts both the project's format and RRHF's {"query", "responses", "scores"}.
type rankedLine struct {
	Prompt     *string   `json:"prompt"`
	Candidates []string  `json:"candidates"`
	Rewards    []float64 `json:"rewards"`
	Query      *string   `json:"query"`
	Responses  []string  `json:"responses"`
	Scores     []float64 `json:"scores"`
}

// ParseRanked validates one JSON line (lineNo is 1-based, for errors).
func ParseRanked(line []byte, lineNo int) (Ranked, error) {
	var l rankedLine
	if err := json.Unmarshal(line, &l); err != nil {
		return Ranked{}, fmt.Errorf("line %d: invalid JSON: %w", lineNo, err)
	}
	var r Ranked
	switch {
	case l.Prompt != nil:
		r = Ranked{Prompt: *l.Prompt, Candidates: l.Candidates, Rewards: l.Rewards}
		if l.Rewards != nil && len(l.Rewards) != len(l.Candidates) {
			return Ranked{}, fmt.Errorf("line %d: %d candidates but %d rewards", lineNo, len(l.Candidates), len(l.Rewards))
		}
	case l.Query != nil:
		if len(l.Scores) != len(l.Responses) {
			return Ranked{}, fmt.Errorf("line %d: %d responses but %d scores", lineNo, len(l.Responses), len(l.Scores))
		}
		idx := make([]int, len(l.Responses))
		for i := range idx {
			idx[i] = i
		}
		// Highest score first; ties keep file order.
		sort.SliceStable(idx, func(a, b int) bool { return l.Scores[idx[a]] > l.Scores[idx[b]] })
		r.Prompt = *l.Query
		for _, i := range idx {
			r.Candidates = append(r.Candidates, l.Responses[i])
			r.Rewards = append(r.Rewards, l.Scores[i])
		}
	default:
		return Ranked{}, fmt.Errorf(`line %d: want {"prompt", "candidates"} or {"query", "responses", "scores"}`, lineNo)
	}
	if r.Prompt == "" {
		return Ranked{}, fmt.Errorf("line %d: empty prompt", lineNo)
	}
	if len(r.Candidates) < 2 {
		return Ranked{}, fmt.Errorf("line %d: %d candidate(s); a ranking needs at least 2", lineNo, len(r.Candidates))
	}
	for i, c := range r.Candidates {
		if c == "" {
			return Ranked{}, fmt.Errorf("line %d: candidate %d is empty", lineNo, i)
		}
	}
	return r, nil
}

// ReadRanked reads a ranked JSONL file; blank lines are skipped, any bad line is an error that
// names the file and line.
func ReadRanked(path string) ([]Ranked, error) {
	f, err := files.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var out []Ranked
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(trimSpace(line)) == 0 {
			continue
		}
		r, err := ParseRanked(line, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no examples", path)
	}
	return out, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
