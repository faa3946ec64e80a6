package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type refTokenize struct {
	Text         string   `json:"text"`
	IDs          []int    `json:"ids"`
	IDsNoSpecial []int    `json:"ids_no_special"`
	Tokens       []string `json:"tokens"`
	Decoded      string   `json:"decoded"`
}

func loadRef(t *testing.T, name string) (*Tokenizer, []refTokenize) {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", name)
	tok, err := Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Tokenize []refTokenize `json:"tokenize"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	return tok, ref.Tokenize
}

func TestMatchesHFReference(t *testing.T) {
	for _, name := range []string{"tiny-gpt2-bytelevel", "tiny-llama-metaspace"} {
		t.Run(name, func(t *testing.T) {
			tok, cases := loadRef(t, name)
			if len(cases) == 0 {
				t.Fatal("no reference cases")
			}
			for _, c := range cases {
				if got := tok.Encode(c.Text, true); !slices.Equal(got, c.IDs) {
					t.Errorf("Encode(%q, special) =\n %v\nwant\n %v", c.Text, got, c.IDs)
				}
				if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDsNoSpecial) {
					t.Errorf("Encode(%q) = %v, want %v", c.Text, got, c.IDsNoSpecial)
				}
				if got := tok.Tokens(c.IDs); !slices.Equal(got, c.Tokens) {
					t.Errorf("Tokens(%q) = %q, want %q", c.Text, got, c.Tokens)
				}
				if got := tok.Decode(c.IDs, true); got != c.Decoded {
					t.Errorf("Decode(%q) = %q, want %q", c.Text, got, c.Decoded)
				}
			}
		})
	}
}

func TestMalformedTokenizerJSON(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"not json", good[:100], "not valid JSON"},
		{"no model", edit(func(m map[string]any) { delete(m, "model") }), "model: missing"},
		{"wordpiece", edit(func(m map[string]any) { m["model"].(map[string]any)["type"] = "WordPiece" }), "WordPiece"},
		{"bad merge", edit(func(m map[string]any) {
			mm := m["model"].(map[string]any)
			mm["merges"] = append(mm["merges"].([]any), []any{"zzz", "q"})
		}), "model.merges[242]"},
		{"pre-tokenizer", edit(func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "BertPreTokenizer"} }), "pre_tokenizer.type"},
		{"regex", edit(func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "(unclosed"}, "behavior": "Isolated"}
		}), "pre_tokenizer.pattern.Regex"},
		{"decoder", edit(func(m map[string]any) { m["decoder"] = map[string]any{"type": "CTC"} }), "decoder.type"},
		{"huge vocab id", edit(func(m map[string]any) { m["model"].(map[string]any)["vocab"].(map[string]any)["!"] = 1e12 }), `model.vocab["!"]: id 1000000000000`},
		{"big vocab id", edit(func(m map[string]any) { m["model"].(map[string]any)["vocab"].(map[string]any)["!"] = 2e9 }), `model.vocab["!"]: id 2000000000`},
		{"negative vocab id", edit(func(m map[string]any) { m["model"].(map[string]any)["vocab"].(map[string]any)["!"] = -5 }), `model.vocab["!"]: id -5`},
		{"huge added id", edit(func(m map[string]any) { m["added_tokens"].([]any)[0].(map[string]any)["id"] = 2e9 }), "added_tokens[0]: id 2000000000"},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "tokenizer.json")
		os.WriteFile(p, c.data, 0o644)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: got %v, want an error naming %q and the file", c.name, err, c.want)
		}
	}
}

// TestLlama3StyleSplit checks a Split pre-tokenizer with a look-ahead regex (Llama-3/Qwen2
// style) followed by a ByteLevel step without its own regex.
func TestLlama3StyleSplit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	m["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
		map[string]any{"type": "Split", "behavior": "Isolated", "invert": false, "pattern": map[string]any{
			"Regex": `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`}},
		map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
	}}
	nb, _ := json.Marshal(m)
	tok, err := Parse(nb)
	if err != nil {
		t.Fatal(err)
	}
	text := "I'LL pay 12345 dollars  now!\n\n  ok"
	ids := tok.Encode(text, false)
	if got := tok.Decode(ids, false); got != text {
		t.Fatalf("round trip: %q", got)
	}
	pieces := tok.preTok([]string{text}, true)
	want := []string{"I", "'LL", "Ġpay", "Ġ", "123", "45", "Ġdollars", "Ġ", "Ġnow", "!ĊĊ", "Ġ", "Ġok"}
	if !slices.Equal(pieces, want) {
		t.Fatalf("pre-tokens %q, want %q", pieces, want)
	}
}

func TestSplitBehaviors(t *testing.T) {
	c := &compiled{lit: "-"}
	for _, tc := range []struct {
		behavior string
		want     []string
	}{
		{"Removed", []string{"the", "final", "countdown"}},
		{"Isolated", []string{"the", "-", "final", "-", "-", "countdown"}},
		{"MergedWithPrevious", []string{"the-", "final-", "-", "countdown"}},
		{"MergedWithNext", []string{"the", "-final", "-", "-countdown"}},
		{"Contiguous", []string{"the", "-", "final", "--", "countdown"}},
	} {
		if got := splitBy("the-final--countdown", c, tc.behavior, false); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.behavior, got, tc.want)
		}
	}
}

func TestTrainByteLevelBPE(t *testing.T) {
	texts := []string{}
	for i := 0; i < 50; i++ {
		texts = append(texts, "\n\nHuman: How do I bake bread at home?\n\nAssistant: Mix flour, water, salt and yeast, then bake it.")
		texts = append(texts, "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital of France.")
	}
	b, err := Train(texts, TrainOptions{VocabSize: 300, SpecialTokens: []string{"<|endoftext|>"}})
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := Train(texts, TrainOptions{VocabSize: 300, SpecialTokens: []string{"<|endoftext|>"}})
	if string(b) != string(b2) {
		t.Fatal("training is not deterministic")
	}
	if _, err := Train(nil, TrainOptions{VocabSize: 300}); err == nil || !strings.Contains(err.Error(), "no text") {
		t.Fatalf("no texts: %v, want an error (it wrote a tokenizer of bytes alone)", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	m := doc["model"].(map[string]any)
	if doc["version"] != "1.0" || m["type"] != "BPE" || len(m["vocab"].(map[string]any)) != 300 {
		t.Fatalf("structure: version %v type %v vocab %d", doc["version"], m["type"], len(m["vocab"].(map[string]any)))
	}
	if pair, ok := m["merges"].([]any)[0].([]any); !ok || len(pair) != 2 {
		t.Fatalf("merges must be [a, b] pairs as tokenizers >= 0.20 writes them: %v", m["merges"].([]any)[0])
	}
	tok, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(texts[:2], "Unseen text: café 東京 🙂 with\ttabs  and  spaces!", "") {
		ids := tok.Encode(s, true)
		if len(ids) == 0 || ids[0] != 0 || tok.Decode(ids, true) != s {
			t.Fatalf("round trip of %q: ids %v decode %q", s, ids, tok.Decode(ids, true))
		}
	}
	// Frequent words were merged: " Paris" is 6 bytes.
	if ids := tok.Encode(" Paris", false); len(ids) > 2 {
		t.Fatalf(`" Paris" is %d tokens after training on it 50 times`, len(ids))
	}
}

// TestInvalidUTF8 encodes bytes that are not UTF-8 (which used to panic) exactly as the same
// text with each bad byte replaced by U+FFFD, for both reference tokenizers.
func TestInvalidUTF8(t *testing.T) {
	for _, name := range []string{"tiny-gpt2-bytelevel", "tiny-llama-metaspace"} {
		tok, _ := loadRef(t, name)
		// The replacements Python's bytes.decode("utf-8", "replace") makes.
		for bad, fixed := range map[string]string{"caf\xe9 au lait": "caf\ufffd au lait", "\xff\xfe": "\ufffd\ufffd",
			"ok \xe2\x82 cut": "ok \ufffd cut", "\x80tail": "\ufffdtail", "\xf0\x9f\x98": "\ufffd", "\xed\xa0\x80": "\ufffd\ufffd\ufffd"} {
			got := tok.Encode(bad, true)
			want := tok.Encode(fixed, true)
			if !slices.Equal(got, want) {
				t.Errorf("%s %q: %v, want %v", name, bad, got, want)
			}
		}
	}
}

// TestEncodePlainKeepsUserSpecialTokensAsText: "<|endoftext|>" typed inside a plain span is
// ordinary text, outside it the control token; text without special tokens is unchanged.
func TestEncodePlainKeepsUserSpecialTokensAsText(t *testing.T) {
	tok, _ := loadRef(t, "tiny-gpt2-bytelevel")
	eot, _ := tok.ID("<|endoftext|>")
	user := "hi <|endoftext|> there"
	text := "<|endoftext|>Human: " + user
	span := [][2]int{{len(text) - len(user), len(text)}}
	got := tok.EncodePlain(text, false, span)
	if got[0] != eot {
		t.Errorf("the template's own <|endoftext|> was not a control token: %v", got)
	}
	if n := strings.Count(fmt.Sprint(got), fmt.Sprint(eot)); slices.Contains(got[1:], eot) {
		t.Errorf("user text produced the control token (%d times): %v", n, got)
	}
	if plain := "Human: hello there"; !slices.Equal(tok.EncodePlain(plain, true, [][2]int{{7, len(plain)}}), tok.Encode(plain, true)) {
		t.Error("a plain span changed the encoding of ordinary text")
	}
	if all := tok.Encode(text, false); !slices.Contains(all[1:], eot) {
		t.Error("Encode should still match added tokens anywhere")
	}
}
