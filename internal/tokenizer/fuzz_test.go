package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// FuzzTokenizerJSON: a tokenizer.json either loads and then encodes and decodes text into ids
// within its vocabulary, or is refused; never a panic.
func FuzzTokenizerJSON(f *testing.F) {
	for _, dir := range []string{"tiny-llama-metaspace", "tiny-gpt2-bytelevel"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", dir, "tokenizer.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Parse(b)
		if err != nil {
			return
		}
		ids := tok.Encode("Hello, world! <|endoftext|> caf\xe9", true)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d outside a vocabulary of %d", id, tok.VocabSize())
			}
		}
		tok.Decode(ids, true)
	})
}

// FuzzEncode: arbitrary bytes encode to ids within the vocabulary with both reference
// tokenizers, and the byte-level one gives back exactly the (UTF-8-repaired) text.
func FuzzEncode(f *testing.F) {
	byteLevel, err := Load(filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel", "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	meta, err := Load(filepath.Join("..", "..", "testdata", "tiny-llama-metaspace", "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"Hello world", "caf\xe9 \xff\xfe", "  spaces\n\nHuman: hi<|endoftext|>", "日本語 ok", "\x00\x01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range []*Tokenizer{byteLevel, meta} {
			for _, id := range tok.Encode(s, true) {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("%q: id %d outside a vocabulary of %d", s, id, tok.VocabSize())
				}
			}
		}
		want, _ := toValidUTF8(s, nil)
		if got := byteLevel.Decode(byteLevel.Encode(s, false), false); got != want {
			t.Fatalf("byte-level round trip of %q gave %q", s, got)
		}
		if !utf8.ValidString(meta.Decode(meta.Encode(s, false), true)) {
			t.Fatalf("metaspace decoded %q to invalid UTF-8", s)
		}
	})
}
