package train

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/testmodels"
)

// train --data takes TRL's preference rows, conversational ones included: the prompt is
// rendered by the model's template with the generation prompt, and the chosen and rejected
// replies end with the template's turn end in place of EOS.
func TestConversationalPreferenceRows(t *testing.T) {
	dir := t.TempDir()
	testmodels.TinyQwen2Chat(t, filepath.Join(dir, "m"))
	b, _ := model.NewBackend()
	m, err := model.Load(b, filepath.Join(dir, "m"))
	if err != nil {
		t.Fatal(err)
	}
	rows := `[{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]},
 {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]}]`
	path := filepath.Join(dir, "prefs.json")
	os.WriteFile(path, []byte(rows), 0o644)
	ranked, err := ReadRanked(path)
	if err != nil || len(ranked) != 2 {
		t.Fatalf("%+v %v", ranked, err)
	}
	eos, _ := ParseEnd("eos", m.EndIDs())
	exs, err := TokenizeFitted(m, ranked, 0, eos)
	if err != nil {
		t.Fatal(err)
	}
	prompt, _ := m.PromptIDs(chat.Prompt{Messages: []chat.Message{{Role: "user", Content: "Hi"}}})
	for _, ex := range exs {
		if !slices.Equal(ex.Prompt, prompt) || !slices.Equal(ex.Candidates[0], m.Tokenizer.Encode("Hello!<|im_end|>\n", false)) ||
			!slices.Equal(ex.Candidates[1], m.Tokenizer.Encode("Go away.<|im_end|>\n", false)) {
			t.Fatalf("example %+v", ex)
		}
	}
	for _, c := range []struct{ body, want string }{
		{`[{"prompt": "x", "chosen": [{"role": "user", "content": "no reply"}], "rejected": "b"}]`, `row 1: field "chosen": no assistant message`},
		{`[{"prompt": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "b"}, {"prompt": "text", "chosen": "a", "rejected": "b"}]`, "row 2: a file holds conversations or texts"},
		{`[{"prompt": 3, "chosen": "a", "rejected": "b"}]`, `row 1: field "prompt"`},
	} {
		os.WriteFile(path, []byte(c.body), 0o644)
		if _, err := ReadRanked(path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want %q", c.body, err, c.want)
		}
	}
}
