package testmodels

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
)

// The tiny chat model loads with Qwen2.5's template, ends turns at <|im_end|> (from
// generation_config.json and eos_token, config.json naming <|endoftext|>), and samples replies
// that end their turn.
func TestTinyQwen2Chat(t *testing.T) {
	dir := t.TempDir()
	TinyQwen2Chat(t, dir)
	b, _ := model.NewBackend()
	m, err := model.Load(b, dir)
	if err != nil {
		t.Fatal(err)
	}
	imEnd, _ := m.Tokenizer.ID("<|im_end|>")
	eot, _ := m.Tokenizer.ID("<|endoftext|>")
	if m.Chat == nil || m.TurnEnd() != "<|im_end|>\n" || !slices.Contains(m.EndIDs(), imEnd) || !slices.Contains(m.EndIDs(), eot) {
		t.Fatalf("template %v, turn end %q, end ids %v", m.Chat, m.TurnEnd(), m.EndIDs())
	}
	ids, err := m.PromptIDs(chat.Prompt{Messages: []chat.Message{{Role: "user", Content: "How do I bake bread?"}}})
	if err != nil {
		t.Fatal(err)
	}
	text := m.Tokenizer.Decode(ids, false)
	if text != "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("rendered prompt %q", text)
	}
	res, err := generate.IDs(context.Background(), m, [][]int{ids}, generate.Options{N: 16, MaxNewTokens: 24, Temperature: 1, TopP: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ended := 0
	for _, c := range res[0] {
		if c.FinishReason == "stop" {
			ended++
			if slices.Contains(c.IDs, imEnd) || strings.Contains(c.Text, "<|im_end|>") {
				t.Fatalf("an ended reply holds its end: ids %v, text %q", c.IDs, c.Text)
			}
		}
	}
	if ended < 4 {
		t.Fatalf("%d of 16 replies ended their turn", ended)
	}
}
