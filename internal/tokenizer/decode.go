package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder maps tokens to text pieces (HF's decode_chain); the pieces are concatenated at the end.
type decoder func(tokens []string) []string

// newDecoder returns nil for a missing decoder: HF then joins tokens with spaces.
func newDecoder(raw json.RawMessage, field string) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	switch t.Type {
	case "Sequence":
		seq, err := sequence(raw, field, "decoders", newDecoder)
		if err != nil {
			return nil, err
		}
		return func(toks []string) []string {
			for _, f := range seq {
				if f == nil {
					continue
				}
				toks = f(toks)
			}
			return toks
		}, nil
	case "ByteLevel":
		return func(toks []string) []string {
			var b []byte
			for _, t := range toks {
				b = append(b, byteLevelToBytes(t)...)
			}
			return []string{strings.ToValidUTF8(string(b), "\uFFFD")}
		}, nil
	case "Replace":
		r, err := newReplace(raw, field)
		if err != nil {
			return nil, err
		}
		return func(toks []string) []string {
			out := make([]string, len(toks))
			for i, t := range toks {
				out[i] = r(t)
			}
			return out
		}, nil
	case "ByteFallback":
		return byteFallback, nil
	case "Fuse":
		return func(toks []string) []string { return []string{strings.Join(toks, "")} }, nil
	case "Strip":
		var j struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return func(toks []string) []string {
			out := make([]string, len(toks))
			for i, t := range toks {
				for k := 0; k < j.Start && strings.HasPrefix(t, j.Content); k++ {
					t = t[len(j.Content):]
				}
				for k := 0; k < j.Stop && strings.HasSuffix(t, j.Content); k++ {
					t = t[:len(t)-len(j.Content)]
				}
				out[i] = t
			}
			return out
		}, nil
	case "Metaspace":
		var j struct {
			Replacement   string `json:"replacement"`
			PrependScheme string `json:"prepend_scheme"`
			AddPrefix     *bool  `json:"add_prefix_space"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if j.Replacement == "" {
			j.Replacement = "▁"
		}
		strip := j.PrependScheme != "never" && (j.AddPrefix == nil || *j.AddPrefix)
		return func(toks []string) []string {
			out := make([]string, len(toks))
			for i, t := range toks {
				t = strings.ReplaceAll(t, j.Replacement, " ")
				if i == 0 && strip {
					t = strings.TrimPrefix(t, " ")
				}
				out[i] = t
			}
			return out
		}, nil
	}
	return nil, fmt.Errorf("%s.type: unsupported decoder %q (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)", field, t.Type)
}

// byteFallback turns runs of <0xNN> tokens back into text; a run that is not valid UTF-8
// becomes one U+FFFD per byte, as HF does.
func byteFallback(toks []string) []string {
	var out []string
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range toks {
		if len(t) == 6 && strings.HasPrefix(t, "<0x") && strings.HasSuffix(t, ">") {
			if b, err := strconv.ParseUint(t[3:5], 16, 8); err == nil {
				pending = append(pending, byte(b))
				continue
			}
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// postProcessor adds special tokens around an encoded single sequence.
type postProcessor func(ids []int) []int

func identityIDs(ids []int) []int { return ids }

func newPostProcessor(raw json.RawMessage, field string, vocab func(string) (int, bool)) (postProcessor, error) {
	if isNull(raw) {
		return identityIDs, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	switch t.Type {
	case "ByteLevel":
		return identityIDs, nil // only adjusts offsets, never ids
	case "Sequence":
		seq, err := sequence(raw, field, "processors", func(r json.RawMessage, f string) (postProcessor, error) {
			return newPostProcessor(r, f, vocab)
		})
		if err != nil {
			return nil, err
		}
		return func(ids []int) []int {
			for _, f := range seq {
				ids = f(ids)
			}
			return ids
		}, nil
	case "TemplateProcessing":
		var j struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		type piece struct {
			ids []int
			seq bool
		}
		var tmpl []piece
		for i, it := range j.Single {
			switch {
			case it.Sequence != nil:
				tmpl = append(tmpl, piece{seq: true})
			case it.SpecialToken != nil:
				st, ok := j.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					id, ok2 := vocab(it.SpecialToken.ID)
					if !ok2 {
						return nil, fmt.Errorf("%s.single[%d]: special token %q is not defined", field, i, it.SpecialToken.ID)
					}
					st.IDs = []int{id}
				}
				tmpl = append(tmpl, piece{ids: st.IDs})
			default:
				return nil, fmt.Errorf("%s.single[%d]: want SpecialToken or Sequence", field, i)
			}
		}
		return func(ids []int) []int {
			var out []int
			for _, p := range tmpl {
				if p.seq {
					out = append(out, ids...)
				} else {
					out = append(out, p.ids...)
				}
			}
			return out
		}, nil
	}
	return nil, fmt.Errorf("%s.type: unsupported post-processor %q (supported: TemplateProcessing, ByteLevel, Sequence)", field, t.Type)
}
