package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/cycle"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/serve"
	"github.com/cyclealign/cyclealign/internal/testmodels"
)

// TestAlignChatModelEndToEnd aligns a tiny random-init Qwen2 chat model (a vocabulary learned
// from English text, Qwen2.5-Instruct's template and end tokens) on a conversational JSONL
// against a black-box over real HTTP: the black-box reads plain text, never template tokens;
// candidates end at <|im_end|>; a SIGKILLed run resumes to identical weights; the aligned model
// keeps its chat files, and serve answers a chat completion with it through its template.
func TestAlignChatModelEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	modelDir := filepath.Join(dir, "qwen2-chat")
	testmodels.TinyQwen2Chat(t, modelDir)
	prompts := filepath.Join(dir, "chat.jsonl")
	var b strings.Builder
	for _, x := range []string{"bake bread", "swim", "save money", "sleep", "cook rice", "paint", "run", "read"} {
		fmt.Fprintf(&b, `{"messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "How do I %s?"}, {"role": "assistant", "content": "Carefully."}]}`+"\n", x)
	}
	os.WriteFile(prompts, []byte(b.String()), 0o644)
	whole, bb := killAndResume(t, bin, modelDir, prompts, "")

	for _, r := range bb.Requests() {
		for _, m := range r.Messages {
			for _, tok := range []string{"<|im_start|>", "<|im_end|>", "<|endoftext|>"} {
				if strings.Contains(m.Content, tok) {
					t.Fatalf("a black-box request holds %s: %q", tok, m.Content)
				}
			}
		}
	}
	if last := bb.Requests()[0].Messages; !strings.Contains(last[len(last)-1].Content, "System: You are brief.\n\nUser: How do I ") {
		t.Fatalf("the black-box did not get the conversation in words: %q", last[len(last)-1].Content)
	}

	bk, _ := model.NewBackend()
	base, err := model.Load(bk, modelDir)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.ReadFile(filepath.Join(whole, cycle.JournalFile))
	ended := 0
	for _, line := range strings.Split(strings.TrimSpace(string(f)), "\n") {
		var rec cycle.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		ids, err := base.PromptIDs(chat.Prompt{Messages: rec.Conversation})
		if err != nil || len(rec.Conversation) != 2 || rec.PromptTokens != len(ids) || rec.Prompt != chat.Plain(rec.Conversation) {
			t.Fatalf("journal: conversation %v, prompt %q, %d prompt tokens (rendered: %d, %v)", rec.Conversation, rec.Prompt, rec.PromptTokens, len(ids), err)
		}
		for i, c := range rec.Candidates {
			if strings.Contains(c, "<|im_end|>") || strings.Contains(c, "\n\nHuman:") {
				t.Fatalf("candidate %q", c)
			}
			if rec.Ended[i] {
				ended++
			}
		}
	}
	if ended == 0 {
		t.Fatal("no candidate ended its turn")
	}

	aligned := filepath.Join(whole, "model")
	for _, name := range []string{"tokenizer_config.json", "generation_config.json"} {
		if _, err := os.Stat(filepath.Join(aligned, name)); err != nil {
			t.Fatalf("the aligned model lacks %s", name)
		}
	}
	m, err := model.Load(bk, aligned)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve.New(m, serve.Options{ModelName: "aligned"})
	hs := httptest.NewServer(srv)
	defer func() { hs.Close(); srv.Close() }()
	msgs := []chat.Message{{Role: "user", Content: "How do I swim?"}}
	body, _ := json.Marshal(map[string]any{"model": "aligned", "messages": msgs, "max_tokens": 16, "temperature": 0})
	resp, err := http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&out)
	want, _ := m.PromptIDs(chat.Prompt{Messages: msgs})
	if resp.StatusCode != 200 || out.Usage.PromptTokens != len(want) || out.Choices[0].Message.Role != "assistant" || strings.Contains(out.Choices[0].Message.Content, "<|im_end|>") {
		t.Fatalf("serve: HTTP %d %+v (want %d prompt tokens)", resp.StatusCode, out, len(want))
	}
}

// tokenize, generate and score take a conversation (--chat FILE) and render it with the
// model's template as apply_chat_template does; a template that raises fails the command with
// its message.
func TestChatFlags(t *testing.T) {
	dir := t.TempDir()
	modelDir := filepath.Join(dir, "m")
	testmodels.TinyQwen2Chat(t, modelDir)
	msgs := filepath.Join(dir, "msgs.json")
	os.WriteFile(msgs, []byte(`[{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]`), 0o644)
	var tok struct {
		Text   string
		IDs    []int
		Tokens []string
	}
	json.Unmarshal(run(t, "tokenize", "--model", modelDir, "--chat", msgs, "--add-generation-prompt", "--json"), &tok)
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
	bk, _ := model.NewBackend()
	m, _ := model.Load(bk, modelDir)
	if tok.Text != want || fmt.Sprint(tok.IDs) != fmt.Sprint(m.Tokenizer.Encode(want, false)) || tok.Tokens[0] != "<|im_start|>" {
		t.Fatalf("tokenize --chat: %+v", tok)
	}
	json.Unmarshal(run(t, "tokenize", "--model", modelDir, "--chat", msgs, "--json"), &tok)
	if tok.Text != strings.TrimSuffix(want, "<|im_start|>assistant\n") {
		t.Fatalf("without the generation prompt: %q", tok.Text)
	}
	var gen struct {
		Completions []struct {
			Text         string
			IDs          []int
			FinishReason string `json:"finish_reason"`
		}
	}
	json.Unmarshal(run(t, "generate", "--model", modelDir, "--chat", msgs, "-n", "8", "--max-new-tokens", "24", "--seed", "3", "--json"), &gen)
	stopped := 0
	for _, c := range gen.Completions {
		if c.FinishReason == "stop" {
			stopped++
		}
	}
	if len(gen.Completions) != 8 || stopped == 0 {
		t.Fatalf("generate --chat: %+v", gen)
	}
	var sc struct {
		PromptIDs []int `json:"prompt_ids"`
	}
	json.Unmarshal(run(t, "score", "--model", modelDir, "--chat", msgs, "--response", "Hello.", "--json"), &sc)
	if fmt.Sprint(sc.PromptIDs) != fmt.Sprint(m.Tokenizer.Encode(want, false)) {
		t.Fatalf("score --chat prompt ids %v", sc.PromptIDs)
	}
	os.WriteFile(filepath.Join(modelDir, "chat_template.jinja"), []byte("{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"), 0o644)
	root := newRootCmd()
	root.SetOut(&strings.Builder{})
	root.SetArgs([]string{"tokenize", "--model", modelDir, "--chat", msgs})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "Conversation roles must alternate") {
		t.Fatalf("a raising template: %v", err)
	}
}
