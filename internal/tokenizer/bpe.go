package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// bpe is the BPE model of tokenizer.json: a vocabulary and ranked merges.
type bpe struct {
	vocab        map[string]int
	merges       map[[2]int]mergeInfo
	unk          int // -1: none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix
	byteIDs      [256]int
	mu           sync.Mutex
	cache        map[string][]int
}

type mergeInfo struct{ rank, id int }

type bpeJSON struct {
	Type                    string          `json:"type"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	Dropout                 *float64        `json:"dropout"`
}

func newBPE(raw json.RawMessage) (*bpe, error) {
	var j bpeJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if j.Type != "BPE" {
		return nil, fmt.Errorf("model.type: unsupported value %q (supported: BPE)", j.Type)
	}
	if len(j.Vocab) == 0 {
		return nil, fmt.Errorf("model.vocab: missing or empty")
	}
	if j.Dropout != nil && *j.Dropout > 0 {
		return nil, fmt.Errorf("model.dropout: unsupported value %v (BPE dropout is for training only)", *j.Dropout)
	}
	m := &bpe{vocab: j.Vocab, unk: -1, fuseUnk: j.FuseUnk, byteFallback: j.ByteFallback,
		ignoreMerges: j.IgnoreMerges, merges: map[[2]int]mergeInfo{}, cache: map[string][]int{}}
	if j.ContinuingSubwordPrefix != nil {
		m.prefix = *j.ContinuingSubwordPrefix
	}
	if j.EndOfWordSuffix != nil {
		m.suffix = *j.EndOfWordSuffix
	}
	if j.UnkToken != nil {
		id, ok := j.Vocab[*j.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model.unk_token: %q is not in the vocabulary", *j.UnkToken)
		}
		m.unk = id
	}
	for b := 0; b < 256; b++ {
		id, ok := j.Vocab[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id = -1
		}
		m.byteIDs[b] = id
	}
	// Merges come as "a b" strings (older files) or as ["a", "b"] pairs (tokenizers >= 0.20).
	var asPairs [][2]string
	if err := json.Unmarshal(j.Merges, &asPairs); err != nil {
		var asStrings []string
		if err2 := json.Unmarshal(j.Merges, &asStrings); err2 != nil {
			return nil, fmt.Errorf("model.merges: want a list of pairs or of \"a b\" strings")
		}
		for i, s := range asStrings {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("model.merges[%d]: %q is not \"a b\"", i, s)
			}
			asPairs = append(asPairs, [2]string{a, b})
		}
	}
	plen := len(m.prefix)
	for i, p := range asPairs {
		a, okA := m.vocab[p[0]]
		b, okB := m.vocab[p[1]]
		if !okA || !okB {
			return nil, fmt.Errorf("model.merges[%d]: %q or %q is not in the vocabulary", i, p[0], p[1])
		}
		merged := p[0] + p[1][min(plen, len(p[1])):]
		id, ok := m.vocab[merged]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d]: merged token %q is not in the vocabulary", i, merged)
		}
		if _, dup := m.merges[[2]int{a, b}]; !dup {
			m.merges[[2]int{a, b}] = mergeInfo{rank: i, id: id}
		}
	}
	return m, nil
}

type symbol struct {
	id         int
	prev, next int // indices in the symbols slice, -1 at the ends
	gone       bool
}

type pairItem struct {
	rank, pos, left, right, leftID, rightID int
}

type pairHeap []pairItem

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairItem)) }
func (h *pairHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// tokenize turns one pre-tokenized word into ids. Merges are applied lowest rank first, leftmost
// on ties, with a heap so long unsplit inputs (no pre-tokenizer) stay O(n log n).
func (m *bpe) tokenize(word string) []int {
	if word == "" {
		return nil
	}
	m.mu.Lock()
	ids, ok := m.cache[word]
	m.mu.Unlock()
	if ok {
		return ids
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return []int{id}
		}
	}
	var syms []symbol
	pendingUnk := false
	pushUnk := func() {
		if m.unk < 0 {
			return
		}
		if m.fuseUnk && pendingUnk {
			return
		}
		syms = append(syms, symbol{id: m.unk})
		pendingUnk = true
	}
	nChars := utf8.RuneCountInString(word)
	ci := 0
	for _, r := range word {
		s := string(r)
		if m.prefix != "" && ci > 0 {
			s = m.prefix + s
		}
		if m.suffix != "" && ci == nChars-1 {
			s += m.suffix
		}
		ci++
		if id, ok := m.vocab[s]; ok {
			syms = append(syms, symbol{id: id})
			pendingUnk = false
			continue
		}
		if m.byteFallback {
			raw := string(r) // an invalid byte is U+FFFD here, as in HF
			okAll := true
			for k := 0; k < len(raw); k++ {
				if m.byteIDs[raw[k]] < 0 {
					okAll = false
				}
			}
			if okAll {
				for k := 0; k < len(raw); k++ {
					syms = append(syms, symbol{id: m.byteIDs[raw[k]]})
				}
				pendingUnk = false
				continue
			}
		}
		pushUnk()
	}
	for i := range syms {
		syms[i].prev, syms[i].next = i-1, i+1
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	h := &pairHeap{}
	addPair := func(l int) {
		r := syms[l].next
		if r < 0 {
			return
		}
		if mi, ok := m.merges[[2]int{syms[l].id, syms[r].id}]; ok {
			heap.Push(h, pairItem{rank: mi.rank, pos: l, left: l, right: r, leftID: syms[l].id, rightID: syms[r].id})
		}
	}
	for i := range syms {
		addPair(i)
	}
	for h.Len() > 0 {
		it := heap.Pop(h).(pairItem)
		l, r := it.left, it.right
		if syms[l].gone || syms[r].gone || syms[l].next != r || syms[l].id != it.leftID || syms[r].id != it.rightID {
			continue
		}
		syms[l].id = m.merges[[2]int{it.leftID, it.rightID}].id
		syms[r].gone = true
		syms[l].next = syms[r].next
		if n := syms[r].next; n >= 0 {
			syms[n].prev = l
		}
		if p := syms[l].prev; p >= 0 {
			addPair(p)
		}
		addPair(l)
	}
	ids = make([]int, 0, len(syms))
	for i := range syms {
		if !syms[i].gone {
			ids = append(ids, syms[i].id)
		}
	}
	m.mu.Lock()
	if len(m.cache) < 100000 {
		m.cache[word] = ids
	}
	m.mu.Unlock()
	return ids
}
