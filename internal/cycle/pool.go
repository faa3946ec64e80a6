package cycle

import (
	"sort"
	"strings"

	"github.com/cyclealign/cyclealign/internal/blackbox"
)

// PoolEntry is a dynamic demonstration and when it was harvested.
type PoolEntry struct {
	Demo        blackbox.Demo `json:"demo"`
	Seq         int           `json:"seq"` // order of insertion (larger is newer)
	Step        int           `json:"step"`
	Interaction int           `json:"interaction"`
}

// Pool is the dynamic demonstration pool: at most Max entries; a new example replaces the
// entry with the same prompt if there is one, else the oldest once the pool is full.
type Pool struct {
	Max     int         `json:"max"`
	Entries []PoolEntry `json:"entries"`
	Seq     int         `json:"seq"`
}

// Add inserts d and reports whether it replaced an entry.
func (p *Pool) Add(d blackbox.Demo, step, interaction int) (replaced bool) {
	if p.Max <= 0 {
		return false
	}
	p.Seq++
	e := PoolEntry{Demo: d, Seq: p.Seq, Step: step, Interaction: interaction}
	for i := range p.Entries {
		if p.Entries[i].Demo.Prompt == d.Prompt {
			p.Entries[i] = e
			return true
		}
	}
	if len(p.Entries) < p.Max {
		p.Entries = append(p.Entries, e)
		return false
	}
	oldest := 0
	for i := range p.Entries {
		if p.Entries[i].Seq < p.Entries[oldest].Seq {
			oldest = i
		}
	}
	p.Entries[oldest] = e
	return true
}

// Select returns up to k demonstrations for prompt, never one of the same prompt (the ranker
// would copy its own earlier answer): the most recent ones, or with mode "similar" those whose
// words overlap the prompt's most (Jaccard), newer first on ties.
func (p *Pool) Select(prompt string, k int, mode string) []blackbox.Demo {
	var cand []PoolEntry
	for _, e := range p.Entries {
		if e.Demo.Prompt != prompt {
			cand = append(cand, e)
		}
	}
	score := func(e PoolEntry) float64 { return 0 }
	if mode == "similar" {
		words := wordSet(prompt)
		score = func(e PoolEntry) float64 { return jaccard(words, wordSet(e.Demo.Prompt)) }
	}
	sort.SliceStable(cand, func(i, j int) bool {
		si, sj := score(cand[i]), score(cand[j])
		if si != sj {
			return si > sj
		}
		return cand[i].Seq > cand[j].Seq
	})
	var out []blackbox.Demo
	for i := 0; i < len(cand) && i < k; i++ {
		out = append(out, cand[i].Demo)
	}
	return out
}

func wordSet(s string) map[string]bool {
	out := map[string]bool{}
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127)
	}) {
		if w != "human" && w != "assistant" {
			out[w] = true
		}
	}
	return out
}

func jaccard(a, b map[string]bool) float64 {
	inter := 0
	for w := range a {
		if b[w] {
			inter++
		}
	}
	union := len(a) + len(b) - inter
	if union == 0 {
		return 0
	}
	return float64(inter) / float64(union)
}
