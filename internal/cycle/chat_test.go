package cycle

import (
	"slices"
	"testing"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/testmodels"
)

// In a conversation a candidate that ended its turn is trained with what the template writes
// after an assistant message (<|im_end|> and its newline in ChatML), as TRL takes a completion,
// and the HH format's "\n\nHuman:" is no stop; text prompts keep both as they were.
func TestChatCandidatesEndWithTheTurnEnd(t *testing.T) {
	m := testmodels.LoadTinyQwen2Chat(t)
	imEnd, _ := m.Tokenizer.ID("<|im_end|>")
	r := &Runner{Cfg: Defaults(), M: m, Prompts: []chat.Prompt{{Messages: []chat.Message{{Role: "user", Content: "Hi"}}}}}
	got := r.responseIDs("Sure thing.", true)
	if want := m.Tokenizer.Encode("Sure thing.<|im_end|>\n", false); !slices.Equal(got, want) || !slices.Contains(got, imEnd) {
		t.Fatalf("ended: %v, want %v", got, want)
	}
	if got := r.responseIDs("Sure thing.", false); slices.Contains(got, imEnd) {
		t.Fatalf("cut by the budget, yet trained with the turn end: %v", got)
	}
	if len(r.stops()) != 0 {
		t.Fatalf("stops for a conversation: %q", r.stops())
	}
	r.Prompts = []chat.Prompt{{Text: "\n\nHuman: Hi\n\nAssistant:"}}
	if got, want := r.responseIDs(" Sure.", true), m.Tokenizer.Encode(" Sure.\n\nHuman:", false); !slices.Equal(got, want) || !slices.Equal(r.stops(), []string{"\n\nHuman:"}) {
		t.Fatalf("text prompt: %v, want %v; stops %q", got, want, r.stops())
	}
}
