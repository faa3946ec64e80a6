package eval

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/serve"
	"github.com/cyclealign/cyclealign/internal/testmodels"
)

// Conversations are evaluated as a chat model is used: greedy replies after the model's
// template (in-process, and from a served model through its chat API, alike), and a reward
// model with a chat template scores the conversation with the reply as its last turn,
// rendered, as TRL's reward trainer and RewardBench do.
func TestEvalConversations(t *testing.T) {
	m := testmodels.LoadTinyQwen2Chat(t)
	rmBody, err := m.WithRewardHead(3)
	if err != nil {
		t.Fatal(err)
	}
	rmBody.Chat = m.Chat
	rm := &blackbox.RewardModel{M: rmBody, Name: "rm"}
	convs := [][]chat.Message{
		{{Role: "user", Content: "How do I bake bread?"}},
		{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Name a colour."}},
	}
	prompts := []string{chat.Plain(convs[0]), chat.Plain(convs[1])}
	rep, err := Run(context.Background(), Options{Model: m, Prompts: prompts, Conversations: convs, RewardModel: rm, MaxNewTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range rep.Samples {
		text, _ := m.Chat.Render(append(slices.Clone(convs[i]), chat.Message{Role: "assistant", Content: s.Response}), false, false)
		want, err := rmBody.Rewards(context.Background(), [][]int{rmBody.Tokenizer.Encode(text, false)})
		if err != nil || s.Reward != want[0] || s.Prompt != prompts[i] {
			t.Fatalf("sample %d: reward %v, want %v (%v)", i, s.Reward, want, err)
		}
	}
	srv := serve.New(m, serve.Options{ModelName: "chat"})
	hs := httptest.NewServer(srv)
	defer func() { hs.Close(); srv.Close() }()
	remote, err := Run(context.Background(), Options{Remote: &Remote{URL: hs.URL + "/v1", Model: "chat"}, Prompts: prompts, Conversations: convs, MaxNewTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range convs {
		if remote.Samples[i].Response != rep.Samples[i].Response {
			t.Errorf("prompt %d: served %q, in-process %q", i, remote.Samples[i].Response, rep.Samples[i].Response)
		}
	}
}
