package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
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
