package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

// pattern is tokenizer.json's {"String": s} or {"Regex": r}.
type pattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// compiled is a pattern ready to find matches, as rune offsets.
type compiled struct {
	lit string
	re  *regexp2.Regexp
}

func compilePattern(p pattern, field string) (*compiled, error) {
	switch {
	case p.String != nil:
		if *p.String == "" {
			return nil, fmt.Errorf("%s.pattern: empty string", field)
		}
		return &compiled{lit: *p.String}, nil
	case p.Regex != nil:
		re, err := regexp2.Compile(*p.Regex, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("%s.pattern.Regex: %w", field, err)
		}
		return &compiled{re: re}, nil
	}
	return nil, fmt.Errorf("%s.pattern: want {\"String\": ...} or {\"Regex\": ...}", field)
}

// matches returns [start, end) byte offsets of every non-overlapping match in s.
func (c *compiled) matches(s string) [][2]int {
	var out [][2]int
	if c.re == nil {
		off := 0
		for {
			i := strings.Index(s[off:], c.lit)
			if i < 0 {
				return out
			}
			out = append(out, [2]int{off + i, off + i + len(c.lit)})
			off += i + len(c.lit)
		}
	}
	runes := []rune(s)
	// regexp2 reports rune offsets; map them back to bytes.
	byteAt := make([]int, len(runes)+1)
	b := 0
	for i, r := range runes {
		byteAt[i] = b
		b += len(string(r))
	}
	byteAt[len(runes)] = b
	m, _ := c.re.FindRunesMatch(runes)
	for m != nil {
		if m.Length > 0 {
			out = append(out, [2]int{byteAt[m.Index], byteAt[m.Index+m.Length]})
		}
		m, _ = c.re.FindNextMatch(m)
	}
	return out
}

// sequence builds each element of the list raw[key] (a Sequence normalizer, pre-tokenizer,
// decoder or post-processor).
func sequence[T any](raw json.RawMessage, field, key string, build func(json.RawMessage, string) (T, error)) ([]T, error) {
	var j map[string]json.RawMessage
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(j[key], &items); err != nil {
		return nil, fmt.Errorf("%s.%s: want a list", field, key)
	}
	out := make([]T, 0, len(items))
	for i, it := range items {
		f, err := build(it, fmt.Sprintf("%s.%s[%d]", field, key, i))
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// ---- normalizers ----

type normalizer func(string) string

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

type typed struct {
	Type string `json:"type"`
}

func newNormalizer(raw json.RawMessage, field string) (normalizer, error) {
	if isNull(raw) {
		return func(s string) string { return s }, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	switch t.Type {
	case "Sequence":
		seq, err := sequence(raw, field, "normalizers", newNormalizer)
		if err != nil {
			return nil, err
		}
		return func(s string) string {
			for _, f := range seq {
				s = f(s)
			}
			return s
		}, nil
	case "Prepend":
		var j struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return func(s string) string {
			if s == "" {
				return s
			}
			return j.Prepend + s
		}, nil
	case "Replace":
		return newReplace(raw, field)
	case "NFC":
		return norm.NFC.String, nil
	case "NFD":
		return norm.NFD.String, nil
	case "NFKC":
		return norm.NFKC.String, nil
	case "NFKD":
		return norm.NFKD.String, nil
	case "Lowercase":
		return strings.ToLower, nil
	case "Strip":
		var j struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return func(s string) string {
			if j.Left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if j.Right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}, nil
	}
	return nil, fmt.Errorf("%s.type: unsupported normalizer %q (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)", field, t.Type)
}

// newReplace parses HF's Replace step: a normalizer, and a decoder applied to each token.
func newReplace(raw json.RawMessage, field string) (func(string) string, error) {
	var j struct {
		Pattern pattern `json:"pattern"`
		Content string  `json:"content"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	c, err := compilePattern(j.Pattern, field)
	if err != nil {
		return nil, err
	}
	return func(s string) string { return c.replace(s, j.Content) }, nil
}

func (c *compiled) replace(s, content string) string {
	if c.re == nil {
		return strings.ReplaceAll(s, c.lit, content)
	}
	var b strings.Builder
	last := 0
	for _, m := range c.matches(s) {
		b.WriteString(s[last:m[0]])
		b.WriteString(content)
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// ---- pre-tokenizers ----

// preTokenizer splits each piece further; first is true for the piece that starts the input
// (Metaspace's prepend_scheme "first" needs it).
type preTokenizer func(pieces []string, first bool) []string

func newPreTokenizer(raw json.RawMessage, field string) (preTokenizer, error) {
	if isNull(raw) {
		return func(p []string, _ bool) []string { return p }, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	switch t.Type {
	case "Sequence":
		seq, err := sequence(raw, field, "pretokenizers", newPreTokenizer)
		if err != nil {
			return nil, err
		}
		return func(pieces []string, first bool) []string {
			for _, f := range seq {
				pieces = f(pieces, first)
			}
			return pieces
		}, nil
	case "ByteLevel":
		var j struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		var split *compiled
		if j.UseRegex == nil || *j.UseRegex {
			split = &compiled{re: regexp2.MustCompile(gpt2Pattern, regexp2.None)}
		}
		return func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				if j.AddPrefixSpace && !strings.HasPrefix(p, " ") {
					p = " " + p
				}
				sub := []string{p}
				if split != nil {
					sub = splitBy(p, split, "Isolated", false)
				}
				for _, s := range sub {
					out = append(out, bytesToByteLevel(s))
				}
			}
			return out
		}, nil
	case "Split":
		var j struct {
			Pattern  pattern `json:"pattern"`
			Behavior string  `json:"behavior"`
			Invert   bool    `json:"invert"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		c, err := compilePattern(j.Pattern, field)
		if err != nil {
			return nil, err
		}
		switch j.Behavior {
		case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		default:
			return nil, fmt.Errorf("%s.behavior: unsupported value %q", field, j.Behavior)
		}
		return func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				out = append(out, splitBy(p, c, j.Behavior, j.Invert)...)
			}
			return out
		}, nil
	case "Metaspace":
		var j struct {
			Replacement   string `json:"replacement"`
			PrependScheme string `json:"prepend_scheme"`
			AddPrefix     *bool  `json:"add_prefix_space"`
			Split         *bool  `json:"split"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if j.Replacement == "" {
			j.Replacement = "▁"
		}
		if j.PrependScheme == "" {
			j.PrependScheme = "always"
			if j.AddPrefix != nil && !*j.AddPrefix {
				j.PrependScheme = "never"
			}
		}
		doSplit := j.Split == nil || *j.Split
		rep := &compiled{lit: j.Replacement}
		return func(pieces []string, first bool) []string {
			var out []string
			for i, p := range pieces {
				p = strings.ReplaceAll(p, " ", j.Replacement)
				if !strings.HasPrefix(p, j.Replacement) && (j.PrependScheme == "always" || (j.PrependScheme == "first" && first && i == 0)) {
					p = j.Replacement + p
				}
				if doSplit {
					out = append(out, splitBy(p, rep, "MergedWithNext", false)...)
				} else {
					out = append(out, p)
				}
			}
			return out
		}, nil
	case "Digits":
		var j struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		re := `\p{N}+`
		if j.Individual {
			re = `\p{N}`
		}
		c := &compiled{re: regexp2.MustCompile(re, regexp2.None)}
		return func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				out = append(out, splitBy(p, c, "Isolated", false)...)
			}
			return out
		}, nil
	}
	return nil, fmt.Errorf("%s.type: unsupported pre-tokenizer %q (supported: Sequence, ByteLevel, Split, Metaspace, Digits)", field, t.Type)
}

// splitBy implements HF's SplitDelimiterBehavior over the matches of c in s.
func splitBy(s string, c *compiled, behavior string, invert bool) []string {
	type seg struct {
		text  string
		match bool
	}
	var segs []seg
	last := 0
	for _, m := range c.matches(s) {
		if m[0] > last {
			segs = append(segs, seg{s[last:m[0]], invert})
		}
		segs = append(segs, seg{s[m[0]:m[1]], !invert})
		last = m[1]
	}
	if last < len(s) {
		segs = append(segs, seg{s[last:], invert})
	}
	var out []string
	switch behavior {
	case "Isolated":
		for _, g := range segs {
			out = append(out, g.text)
		}
	case "Removed":
		for _, g := range segs {
			if !g.match {
				out = append(out, g.text)
			}
		}
	case "MergedWithPrevious":
		prevMatch := false
		for _, g := range segs {
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1] += g.text
			} else {
				out = append(out, g.text)
			}
			prevMatch = g.match
		}
	case "MergedWithNext":
		pending := ""
		for _, g := range segs {
			if g.match {
				if pending != "" {
					out = append(out, pending)
				}
				pending = g.text
				continue
			}
			out = append(out, pending+g.text)
			pending = ""
		}
		if pending != "" {
			out = append(out, pending)
		}
	case "Contiguous":
		prevMatch := false
		for i, g := range segs {
			if g.match && prevMatch && i > 0 {
				out[len(out)-1] += g.text
			} else {
				out = append(out, g.text)
			}
			prevMatch = g.match
		}
	}
	return out
}
