// Package tokenizer reads a HuggingFace tokenizer.json and encodes and decodes text exactly as
// the HF tokenizers library does for BPE models (byte-level and byte-fallback styles).
package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cyclealign/cyclealign/internal/files"
)

// Tokenizer is a loaded tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	model     *bpe
	idToToken []string
	added     []addedToken
	addedByID map[int]addedToken
	normalize normalizer
	preTok    preTokenizer
	decode    decoder
	post      postProcessor
	raw       []byte
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type fileJSON struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

// Load reads a tokenizer.json file.
func Load(path string) (*Tokenizer, error) {
	b, err := files.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Parse builds a Tokenizer from tokenizer.json bytes.
func Parse(b []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if len(f.Model) == 0 {
		return nil, fmt.Errorf("model: missing")
	}
	m, err := newBPE(f.Model)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{model: m, addedByID: map[int]addedToken{}, raw: b}
	// Ids index a table, so bound them before allocating it: real files number their tokens
	// densely from 0, so twice the token count (and at least 2^20) leaves room for gaps.
	limit := max(1<<20, 2*(len(m.vocab)+len(f.AddedTokens)))
	size := 0
	for tok, id := range m.vocab {
		if id < 0 || id >= limit {
			return nil, fmt.Errorf("model.vocab[%q]: id %d out of range [0, %d)", tok, id, limit)
		}
		size = max(size, id+1)
	}
	for i, a := range f.AddedTokens {
		if a.Content == "" || a.ID < 0 {
			return nil, fmt.Errorf("added_tokens[%d]: needs content and a non-negative id", i)
		}
		if a.ID >= limit {
			return nil, fmt.Errorf("added_tokens[%d]: id %d out of range [0, %d)", i, a.ID, limit)
		}
		size = max(size, a.ID+1)
	}
	t.idToToken = make([]string, size)
	for tok, id := range m.vocab {
		t.idToToken[id] = tok
	}
	for _, a := range f.AddedTokens {
		t.idToToken[a.ID] = a.Content
		t.addedByID[a.ID] = a
		t.added = append(t.added, a)
	}
	// Longest first, so the first match at a position is the longest one.
	sort.SliceStable(t.added, func(i, j int) bool { return len(t.added[i].Content) > len(t.added[j].Content) })
	if t.normalize, err = newNormalizer(f.Normalizer, "normalizer"); err != nil {
		return nil, err
	}
	if t.preTok, err = newPreTokenizer(f.PreTokenizer, "pre_tokenizer"); err != nil {
		return nil, err
	}
	if t.decode, err = newDecoder(f.Decoder, "decoder"); err != nil {
		return nil, err
	}
	if t.post, err = newPostProcessor(f.PostProcessor, "post_processor", t.ID); err != nil {
		return nil, err
	}
	return t, nil
}

// Raw returns the tokenizer.json bytes it was parsed from, for saving a model directory.
func (t *Tokenizer) Raw() []byte { return t.raw }

// VocabSize is one more than the largest id.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// Token returns the string of an id ("" when out of range).
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.idToToken) {
		return ""
	}
	return t.idToToken[id]
}

// ID looks a token string up among added tokens and the vocabulary.
func (t *Tokenizer) ID(tok string) (int, bool) {
	for _, a := range t.added {
		if a.Content == tok {
			return a.ID, true
		}
	}
	id, ok := t.model.vocab[tok]
	return id, ok
}

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool { return t.addedByID[id].Special }

// Tokens maps ids to token strings.
func (t *Tokenizer) Tokens(ids []int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = t.Token(id)
	}
	return out
}

// Encode tokenizes text. With addSpecial, the post-processor's special tokens are added
// (e.g. Llama's <s>); added tokens in the text are matched either way, as in HF.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	return t.EncodePlain(text, addSpecial, nil)
}

// EncodePlain is Encode where no added token is matched starting inside one of the byte
// ranges plain ([start, end) into text): text a user typed there, such as "<|endoftext|>" in
// a chat message, is encoded as ordinary text, and only the template around it produces
// special tokens. Text that is not valid UTF-8 is first made valid, each bad byte becoming
// U+FFFD, as Python's decode(errors="replace") does before HF sees it.
func (t *Tokenizer) EncodePlain(text string, addSpecial bool, plain [][2]int) []int {
	if !utf8.ValidString(text) {
		text, plain = toValidUTF8(text, plain)
	}
	var ids []int
	first := true
	for _, seg := range t.splitAdded(text, plain) {
		if seg.added >= 0 {
			ids = append(ids, seg.added)
			first = false
			continue
		}
		s := seg.text
		if s = t.normalize(s); s == "" {
			continue
		}
		pieces := t.preTok([]string{s}, first)
		first = false
		for _, p := range pieces {
			ids = append(ids, t.model.tokenize(p)...)
		}
	}
	if addSpecial {
		ids = t.post(ids)
	}
	if ids == nil {
		ids = []int{}
	}
	return ids
}

type segment struct {
	text  string
	added int // -1: plain text
}

// splitAdded cuts text around added tokens (leftmost, then longest match), honouring
// lstrip/rstrip (absorb neighbouring whitespace) and single_word.
func (t *Tokenizer) splitAdded(text string, plain [][2]int) []segment {
	if len(t.added) == 0 {
		return []segment{{text, -1}}
	}
	var segs []segment
	start := 0
	for i := 0; i < len(text); {
		var hit *addedToken
		for k := range t.added {
			if inSpans(i, plain) {
				break
			}
			a := &t.added[k]
			if strings.HasPrefix(text[i:], a.Content) && (!a.SingleWord || isWordBoundary(text, i, i+len(a.Content))) {
				hit = a
				break
			}
		}
		if hit == nil {
			i++
			continue
		}
		end := i + len(hit.Content)
		before := text[start:i]
		if hit.LStrip {
			before = strings.TrimRightFunc(before, unicode.IsSpace)
		}
		if hit.RStrip {
			rest := strings.TrimLeftFunc(text[end:], unicode.IsSpace)
			end = len(text) - len(rest)
		}
		if before != "" {
			segs = append(segs, segment{before, -1})
		}
		segs = append(segs, segment{"", hit.ID})
		start, i = end, end
	}
	if start < len(text) {
		segs = append(segs, segment{text[start:], -1})
	}
	return segs
}

func inSpans(i int, spans [][2]int) bool {
	for _, sp := range spans {
		if i >= sp[0] && i < sp[1] {
			return true
		}
	}
	return false
}

// toValidUTF8 replaces each invalid byte with U+FFFD and moves the spans' offsets with it.
func toValidUTF8(text string, spans [][2]int) (string, [][2]int) {
	var b strings.Builder
	moved := make([][2]int, len(spans))
	mark := func(old, now int) {
		for k, sp := range spans {
			if sp[0] == old {
				moved[k][0] = now
			}
			if sp[1] == old {
				moved[k][1] = now
			}
		}
	}
	for i := 0; i < len(text); {
		mark(i, b.Len())
		r, size := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
			size = maximalSubpart(text[i:])
		} else {
			b.WriteString(text[i : i+size])
		}
		i += size
	}
	mark(len(text), b.Len())
	return b.String(), moved
}

// maximalSubpart is the length of the invalid sequence at the start of s that one U+FFFD
// replaces under Unicode's "maximal subpart" rule (Python's and WHATWG's): a lead byte and
// as many of the continuation bytes it allows as follow, or a single byte.
func maximalSubpart(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF) // the range of the second byte
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c >= 0xE0 && c <= 0xEF:
		need = 2
		if c == 0xE0 {
			lo = 0xA0
		} else if c == 0xED {
			hi = 0x9F
		}
	case c >= 0xF0 && c <= 0xF4:
		need = 3
		if c == 0xF0 {
			lo = 0x90
		} else if c == 0xF4 {
			hi = 0x8F
		}
	default:
		return 1
	}
	n := 1
	for n <= need && n < len(s) && s[n] >= lo && s[n] <= hi {
		n++
		lo, hi = 0x80, 0xBF
	}
	return n
}

func isWordBoundary(s string, i, j int) bool {
	isWord := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' }
	if i > 0 {
		r := []rune(s[:i])
		if isWord(r[len(r)-1]) {
			return false
		}
	}
	if j < len(s) {
		for _, r := range s[j:] {
			return !isWord(r)
		}
	}
	return true
}

// Decode turns ids back into text; skipSpecial drops added tokens marked special, as HF's
// skip_special_tokens does.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.idToToken) || (skipSpecial && t.IsSpecial(id)) {
			continue
		}
		toks = append(toks, t.idToToken[id])
	}
	if t.decode == nil {
		return strings.Join(toks, " ")
	}
	return strings.Join(t.decode(toks), "")
}
