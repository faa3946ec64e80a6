package testmodels

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/generate"
)

// The tiny chat model loads with Qwen2.5's template, ends turns at <|im_end|> (from
// generation_config.json and eos_token, config.json naming <|endoftext|>), and samples replies
// that end their turn.
func TestTinyQwen2Chat(t *testing.T) {
	m := LoadTinyQwen2Chat(t)
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

// An n-gram ban never forbids the template's turn end: every message of a ChatML prompt ends
// with "<|im_end|>", so HF's rule would forbid a reply to end after the two tokens that ended
// one of them.
func TestNoRepeatNGramLeavesTheTurnEnd(t *testing.T) {
	m := LoadTinyQwen2Chat(t)
	imEnd, _ := m.Tokenizer.ID("<|im_end|>")
	ids, _ := m.PromptIDs(chat.Prompt{Messages: []chat.Message{{Role: "user", Content: "How do I bake bread?"}}})
	at := slices.Index(ids[3:], imEnd) + 3 // the system message's end
	prompt := append(slices.Clone(ids), ids[at-2:at]...)
	res, err := generate.IDs(context.Background(), m, [][]int{prompt}, generate.Options{N: 1, MaxNewTokens: 1, Greedy: true, TopP: 1,
		IgnoreEOS: true, NoRepeatNGram: 3, TopLogprobs: m.Config.VocabSize})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range res[0][0].Top[0] {
		if a.ID == imEnd && (math.IsInf(a.Logprob, -1) || math.IsNaN(a.Logprob)) {
			t.Fatalf("<|im_end|> banned: %v", a.Logprob)
		}
	}
	if !slices.ContainsFunc(res[0][0].Top[0], func(a generate.Alt) bool { return a.ID == imEnd }) {
		t.Fatal("<|im_end|> not among the alternatives")
	}
}
