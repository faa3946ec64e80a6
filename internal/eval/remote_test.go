package eval

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

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
}
