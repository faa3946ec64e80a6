package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/dlclark/regexp2"
)

// TrainOptions configure byte-level BPE training.
type TrainOptions struct {
	VocabSize     int      // total, special tokens and the 256 byte symbols included
	SpecialTokens []string // first ids; the first one is also prepended by the post-processor
	MinFrequency  int      // pairs seen fewer times are never merged
}

// Train learns a byte-level BPE (GPT-2 style: the GPT-2 pre-tokenizer regex, bytes mapped to
// visible characters, every byte in the base alphabet so any text encodes) and returns the
// tokenizer.json bytes. Ties between equally frequent pairs go to the smaller pair, so the
// result is a deterministic function of the texts.
func Train(texts []string, o TrainOptions) ([]byte, error) {
	if len(texts) == 0 {
		return nil, fmt.Errorf("no text to train a tokenizer on")
	}
	if o.VocabSize < 256+len(o.SpecialTokens) {
		return nil, fmt.Errorf("vocab size %d is below the %d byte symbols and special tokens", o.VocabSize, 256+len(o.SpecialTokens))
	}
	re := regexp2.MustCompile(gpt2Pattern, regexp2.None)
	c := &compiled{re: re}
	counts := map[string]int{}
	for _, t := range texts {
		for _, p := range splitBy(t, c, "Isolated", false) {
			counts[bytesToByteLevel(p)]++
		}
	}
	vocab := map[string]int{}
	for i, s := range o.SpecialTokens {
		vocab[s] = i
	}
	alphabet := make([]string, 0, 256)
	for b := 0; b < 256; b++ {
		alphabet = append(alphabet, string(byteToRune[b]))
	}
	sort.Strings(alphabet)
	for _, a := range alphabet {
		vocab[a] = len(vocab)
	}
	type word struct {
		syms  []string
		count int
	}
	keys := make([]string, 0, len(counts))
	for w := range counts {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	words := make([]word, len(keys))
	for i, w := range keys {
		for _, r := range w {
			words[i].syms = append(words[i].syms, string(r))
		}
		words[i].count = counts[w]
	}
	type pair [2]string
	pairCount := map[pair]int{}
	where := map[pair]map[int]bool{}
	addPairs := func(i, sign int) {
		s := words[i].syms
		for k := 0; k+1 < len(s); k++ {
			p := pair{s[k], s[k+1]}
			pairCount[p] += sign * words[i].count
			if sign > 0 {
				if where[p] == nil {
					where[p] = map[int]bool{}
				}
				where[p][i] = true
			}
		}
	}
	for i := range words {
		addPairs(i, 1)
	}
	minFreq := max(o.MinFrequency, 2)
	var merges [][2]string
	for len(vocab) < o.VocabSize {
		var best pair
		bestN := 0
		for p, n := range pairCount {
			if n > bestN || n == bestN && n > 0 && (p[0] < best[0] || p[0] == best[0] && p[1] < best[1]) {
				best, bestN = p, n
			}
		}
		if bestN < minFreq {
			break
		}
		merged := best[0] + best[1]
		merges = append(merges, [2]string{best[0], best[1]})
		if _, ok := vocab[merged]; !ok {
			vocab[merged] = len(vocab)
		}
		idx := make([]int, 0, len(where[best]))
		for i := range where[best] {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		for _, i := range idx {
			addPairs(i, -1)
			s := words[i].syms
			out := s[:0:0]
			for k := 0; k < len(s); k++ {
				if k+1 < len(s) && s[k] == best[0] && s[k+1] == best[1] {
					out = append(out, merged)
					k++
				} else {
					out = append(out, s[k])
				}
			}
			words[i].syms = out
			addPairs(i, 1)
		}
		delete(pairCount, best)
		delete(where, best)
	}
	return marshalByteLevel(vocab, merges, o.SpecialTokens)
}

func marshalByteLevel(vocab map[string]int, merges [][2]string, special []string) ([]byte, error) {
	var added []map[string]any
	for i, s := range special {
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
	}
	byteLevel := func(prefix bool) map[string]any {
		return map[string]any{"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": true}
	}
	var post any = byteLevel(false)
	if len(special) > 0 {
		post = map[string]any{"type": "TemplateProcessing",
			"single": []any{map[string]any{"SpecialToken": map[string]any{"id": special[0], "type_id": 0}},
				map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
			"pair": []any{map[string]any{"SpecialToken": map[string]any{"id": special[0], "type_id": 0}},
				map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
				map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}}},
			"special_tokens": map[string]any{special[0]: map[string]any{"id": special[0], "ids": []int{0}, "tokens": []string{special[0]}}}}
	}
	doc := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil, "added_tokens": added, "normalizer": nil,
		"pre_tokenizer": byteLevel(false), "post_processor": post, "decoder": byteLevel(true),
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": merges},
	}
	return json.MarshalIndent(doc, "", "  ")
}
