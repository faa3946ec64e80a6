package serve

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
)

var llamaDir = filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")

// writeAdapter saves a PEFT adapter for the tiny llama whose B matrices are random (a fresh
// adapter's are zero, which would leave the outputs unchanged).
func writeAdapter(t *testing.T, seed uint64) string {
	t.Helper()
	b, _ := model.NewBackend()
	m, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddLoRA(model.LoRA{R: 4, Alpha: 8, Targets: []string{"q", "v", "up"}}, seed); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), fmt.Sprint("adapter-", seed))
	if err := m.SaveAdapter(dir); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "adapter_model.safetensors")
	ts, err := hf.ReadSafetensors(file)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	for name, x := range ts {
		if strings.Contains(name, "lora_B") {
			for i := range x.Data {
				x.Data[i] = float32(r.NormFloat64() * 0.5)
			}
		}
	}
	if err := hf.WriteSafetensors(file, ts, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoRAAdaptersLoadSelectAndUnload(t *testing.T) {
	b, _ := model.NewBackend()
	withAdapter := func(path string) (*model.Model, error) {
		m, err := model.Load(b, llamaDir)
		if err != nil {
			return nil, err
		}
		return m, m.LoadAdapter(path)
	}
	base, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	s := New(base, Options{ModelName: "base", LoadAdapter: withAdapter, MaxAdapters: 2})
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	hs := srv.URL
	c := openai.NewClient(option.WithBaseURL(hs+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	ctx := context.Background()
	a1, a2 := writeAdapter(t, 1), writeAdapter(t, 2)

	for _, ad := range []struct{ name, path string }{{"step-1", a1}, {"step-2", a2}} {
		if code, _ := postJSON(t, hs+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":%q,"lora_path":%q}`, ad.name, ad.path)); code != http.StatusOK {
			t.Fatalf("load %s: HTTP %d", ad.name, code)
		}
	}
	models, err := c.Models.List(ctx)
	if err != nil || len(models.Data) != 3 || models.Data[1].ID != "step-1" || models.Data[2].ID != "step-2" {
		t.Fatalf("models after two loads: %+v %v", models, err)
	}
	// Each name decodes with its own weights: greedy text equals the in-process model's.
	prompt := "\n\nHuman: How do I bake bread?\n\nAssistant:"
	greedy := func(name string) string {
		resp, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(name),
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)}, MaxTokens: openai.Int(12), Temperature: openai.Float(0)})
		if err != nil {
			t.Fatalf("completion from %s: %v", name, err)
		}
		return resp.Choices[0].Text
	}
	local := func(m *model.Model) string {
		res, err := generate.Text(ctx, m, []string{prompt}, generate.Options{N: 1, MaxNewTokens: 12, Greedy: true, TopP: 1})
		if err != nil {
			t.Fatal(err)
		}
		return res[0][0].Text
	}
	m1, _ := withAdapter(a1)
	m2, _ := withAdapter(a2)
	want := map[string]string{"base": local(base), "step-1": local(m1), "step-2": local(m2)}
	if want["step-1"] == want["base"] || want["step-1"] == want["step-2"] {
		t.Fatalf("the adapters do not change the greedy text: %q", want)
	}
	for name, w := range want {
		if got := greedy(name); got != w {
			t.Errorf("%s served %q, in-process %q", name, got, w)
		}
	}
	// Duplicates, a third adapter beyond --max-loras, a bad path, and unknown names are refused.
	for _, bad := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{"load", fmt.Sprintf(`{"lora_name":"step-1","lora_path":%q}`, a1), 400, "already been loaded"},
		{"load", fmt.Sprintf(`{"lora_name":"step-3","lora_path":%q}`, a1), 400, "unload one first"},
		{"load", `{"lora_name":"x"}`, 400, "must be provided"},
		{"unload", `{"lora_name":"nope"}`, 404, "cannot be found"},
	} {
		code, v := postJSON(t, hs+"/v1/"+bad.path+"_lora_adapter", "", bad.body)
		if code != bad.code || !strings.Contains(fmt.Sprint(v), bad.msg) {
			t.Errorf("%s %s: HTTP %d %v, want %d %q", bad.path, bad.body, code, v, bad.code, bad.msg)
		}
	}
	if code, _ := postJSON(t, hs+"/v1/unload_lora_adapter", "", `{"lora_name":"step-1"}`); code != http.StatusOK {
		t.Fatalf("unload: HTTP %d", code)
	}
	if _, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "step-1",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)}, MaxTokens: openai.Int(2)}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("an unloaded adapter still answers: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "missing")
	if code, v := postJSON(t, hs+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":"step-9","lora_path":%q}`, bad)); code != 400 || !strings.Contains(fmt.Sprint(v), "missing") {
		t.Fatalf("a missing adapter directory: HTTP %d %v", code, v)
	}
	if got := greedy("step-2"); got != want["step-2"] {
		t.Fatalf("step-2 after step-1's unload: %q, want %q", got, want["step-2"])
	}
}
