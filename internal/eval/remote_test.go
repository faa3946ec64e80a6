package eval

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/serve"
)

// TestServedModelUnderTest: evaluating a model through cyclealign serve gives the same greedy
// responses as evaluating it locally.
func TestServedModelUnderTest(t *testing.T) {
	b, _ := model.NewBackend()
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel"))
	if err != nil {
		t.Fatal(err)
	}
	s := serve.New(m, serve.Options{ModelName: "tiny"})
	hs := httptest.NewServer(s)
	defer func() { hs.Close(); s.Close() }()
	prompts := []string{"\n\nHuman: Hi\n\nAssistant:", "\n\nHuman: What is the capital of France?\n\nAssistant:"}
	local, err := Run(context.Background(), Options{Model: m, Prompts: prompts, MaxNewTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	remote, err := Run(context.Background(), Options{Remote: &Remote{URL: hs.URL + "/v1", Model: "tiny"}, Prompts: prompts, MaxNewTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		if local.Samples[i].Response != remote.Samples[i].Response || local.Samples[i].Response == "" {
			t.Fatalf("prompt %d: local %q, served %q", i, local.Samples[i].Response, remote.Samples[i].Response)
		}
	}
	// A decoding option the API cannot carry is refused, not dropped (eval --model-url with
	// --no-repeat-ngram 3 decoded plain greedy without a word).
	if _, err := Run(context.Background(), Options{Remote: &Remote{URL: hs.URL + "/v1", Model: "tiny"}, Prompts: prompts, MaxNewTokens: 10, NoRepeatNGram: 3}); err == nil || !strings.Contains(err.Error(), "no-repeat n-gram") {
		t.Fatalf("no-repeat n-gram with a served model: %v", err)
	}
}

// TestRemoteInFlightAndFailure: a server under test gets several requests at once, each reply
// lands at its prompt, and a request it refuses fails the evaluation with the server's message.
func TestRemoteInFlightAndFailure(t *testing.T) {
	var mu sync.Mutex
	inFlight, most := 0, 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Prompt string `json:"prompt"`
		}
		if r.URL.Path != "/v1/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
			return
		}
		if strings.Contains(req.Prompt, "refuse") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":{"message":"prompt refused by policy","type":"invalid_request_error"}}`))
			return
		}
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
			"choices": []map[string]any{{"index": 0, "text": " re:" + req.Prompt, "finish_reason": "stop", "logprobs": nil}},
			"usage":   map[string]int{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
	}))
	defer hs.Close()
	r := &Remote{URL: hs.URL + "/v1", Model: "m"}
	var prompts []string
	for i := range 16 {
		prompts = append(prompts, fmt.Sprintf("p%d", i))
	}
	got, err := r.greedy(context.Background(), prompts, nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		if got[i] != " re:"+p {
			t.Fatalf("reply %d: %q, want the reply to %q", i, got[i], p)
		}
	}
	if most < 2 {
		t.Fatalf("at most %d request in flight, want several", most)
	}
	_, err = r.greedy(context.Background(), append(prompts, "please refuse"), nil, 4)
	if err == nil || !strings.Contains(err.Error(), "prompt refused by policy") || !strings.Contains(err.Error(), hs.URL) {
		t.Fatalf("refused request: %v, want the server's message and its URL", err)
	}
}
