package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"weak"

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

// freshWithAdapter loads the base again and attaches the adapter: the model a served adapter,
// which shares the base (WithAdapter), must decode like.
func freshWithAdapter(t *testing.T, path string) *model.Model {
	t.Helper()
	b, _ := model.NewBackend()
	m, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadAdapter(path, 0); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoRAAdaptersLoadSelectAndUnload(t *testing.T) {
	b, _ := model.NewBackend()
	base, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	s := New(base, Options{ModelName: "base", LoadAdapter: func(path string) (*model.Model, error) { return base.WithAdapter(path, 0) }, MaxAdapters: 2})
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
	want := map[string]string{"base": local(base), "step-1": local(freshWithAdapter(t, a1)), "step-2": local(freshWithAdapter(t, a2))}
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

// rewriteConfig returns a copy of the adapter at dir whose adapter_config.json has key set to
// the raw JSON value.
func rewriteConfig(t *testing.T, dir, key, value string) string {
	t.Helper()
	out := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg[key] = json.RawMessage(value)
	b, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(out, "adapter_config.json"), b, 0o644)
	st, _ := os.ReadFile(filepath.Join(dir, "adapter_model.safetensors"))
	os.WriteFile(filepath.Join(out, "adapter_model.safetensors"), st, 0o644)
	return out
}

// startAdapters serves the tiny llama with adapters loaded over its weights; loads counts the
// calls of the loader.
func startAdapters(t *testing.T, o Options) (url string, s *Server, loads *atomic.Int64) {
	t.Helper()
	b, _ := model.NewBackend()
	base, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	loads = &atomic.Int64{}
	o.ModelName = "base"
	o.LoadAdapter = func(path string) (*model.Model, error) {
		loads.Add(1)
		return base.WithAdapter(path, o.MaxLoRARank)
	}
	s = New(base, o)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return srv.URL, s, loads
}

// Hostile adapters are refused with a 400 before anything is allocated, and the server goes on
// serving: a huge rank (it died of "out of memory"), an overflowing alpha (it answered junk),
// an adapter file that is a FIFO (the request hung in open).
func TestHostileAdaptersRefused(t *testing.T) {
	url, _, _ := startAdapters(t, Options{})
	good := writeAdapter(t, 1)
	fifo := rewriteConfig(t, good, "r", "4")
	os.Remove(filepath.Join(fifo, "adapter_model.safetensors"))
	if err := syscall.Mkfifo(filepath.Join(fifo, "adapter_model.safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, dir, msg string }{
		{"huge-rank", rewriteConfig(t, good, "r", "100000000"), "greater than max_lora_rank 16"},
		{"huge-alpha", rewriteConfig(t, good, "lora_alpha", "1e39"), "lora_alpha"},
		{"negative-alpha", rewriteConfig(t, good, "lora_alpha", "-8"), "lora_alpha"},
		{"zero-rank", rewriteConfig(t, good, "r", "0"), "at least 1"},
		{"rank-not-tensors", rewriteConfig(t, good, "r", "8"), "another shape"},
		{"fifo", fifo, "named pipe"},
	} {
		start := time.Now()
		code, v := postJSON(t, url+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":%q,"lora_path":%q}`, c.name, c.dir))
		if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(v), c.msg) {
			t.Errorf("%s: HTTP %d %v, want 400 %q", c.name, code, v, c.msg)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: refused after %v", c.name, d)
		}
	}
	if code, _ := postJSON(t, url+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":"ok","lora_path":%q}`, good)); code != http.StatusOK {
		t.Fatalf("a good adapter after the hostile ones: HTTP %d", code)
	}
	if code, v := postJSON(t, url+"/v1/completions", "", `{"model":"ok","prompt":"Hi","max_tokens":3}`); code != http.StatusOK {
		t.Fatalf("serving after the hostile loads: HTTP %d %v", code, v)
	}
}

// The rank check happens before the adapters are sized, also outside the server: a rank
// beyond the model's own dimensions is refused, not allocated.
func TestHugeRankRefusedBeforeAllocation(t *testing.T) {
	b, _ := model.NewBackend()
	m, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	huge := rewriteConfig(t, writeAdapter(t, 1), "r", "100000000")
	if err := m.LoadAdapter(huge, 0); err == nil || !strings.Contains(err.Error(), "smaller side") {
		t.Fatalf("rank 1e8: %v", err)
	}
	if err := m.AddLoRA(model.LoRA{R: 1 << 30, Alpha: 1, Targets: []string{"q"}}, 1); err == nil {
		t.Fatal("AddLoRA took a rank of 2^30")
	}
}

// --max-loras holds under concurrent loads: the check and the claim of a place are one step,
// and concurrent loads of one name build it once.
func TestMaxLoRAsUnderConcurrentLoads(t *testing.T) {
	url, s, loads := startAdapters(t, Options{MaxAdapters: 2})
	dir := writeAdapter(t, 1)
	load := func(names func(i int) string, n int) []int {
		codes := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				codes[i], _ = postJSON(t, url+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":%q,"lora_path":%q}`, names(i), dir))
			})
		}
		wg.Wait()
		return codes
	}
	count := func(codes []int) (ok int) {
		for _, c := range codes {
			if c == http.StatusOK {
				ok++
			}
		}
		return ok
	}
	if ok := count(load(func(int) string { return "same" }, 20)); ok != 1 || loads.Load() != 1 {
		t.Fatalf("20 concurrent loads of one name: %d succeeded, %d models built", ok, loads.Load())
	}
	if ok := count(load(func(i int) string { return fmt.Sprint("a", i) }, 10)); ok != 1 {
		t.Fatalf("10 concurrent loads under other names with one place left: %d succeeded", ok)
	}
	s.mu.Lock()
	resident := len(s.adapters)
	s.mu.Unlock()
	if resident != 2 {
		t.Fatalf("--max-loras 2: %d adapters resident", resident)
	}
}

// An unloaded adapter's model is freed once its last request ends (they stayed until
// shutdown: 30 load/unload cycles grew RSS by 831 MB), and a request already running on it
// finishes normally.
func TestUnloadedAdapterIsFreed(t *testing.T) {
	b, _ := model.NewBackend()
	base, err := model.Load(b, llamaDir)
	if err != nil {
		t.Fatal(err)
	}
	var built []weak.Pointer[model.Model]
	s := New(base, Options{ModelName: "base", LoadAdapter: func(path string) (*model.Model, error) {
		m, err := base.WithAdapter(path, 0)
		if err == nil {
			built = append(built, weak.Make(m))
		}
		return m, err
	}})
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	dir := writeAdapter(t, 1)
	for i := range 3 {
		if code, _ := postJSON(t, srv.URL+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":"a","lora_path":%q}`, dir)); code != 200 {
			t.Fatalf("load %d: HTTP %d", i, code)
		}
		// A streamed request is under way when the adapter is unloaded; it still ends with [DONE].
		resp, err := http.Post(srv.URL+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"a","prompt":"Hello there","max_tokens":40,"temperature":0,"stream":true}`))
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(resp.Body)
		first, _ := r.ReadString('\n')
		if code, _ := postJSON(t, srv.URL+"/v1/unload_lora_adapter", "", `{"lora_name":"a"}`); code != 200 {
			t.Fatalf("unload %d: HTTP %d", i, code)
		}
		rest, _ := io.ReadAll(r)
		resp.Body.Close()
		if !strings.HasPrefix(first, "data: ") || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
			t.Fatalf("cycle %d: the stream in flight at the unload: %q ... %q", i, first, rest)
		}
	}
	// And one unloaded with no request on it.
	if code, _ := postJSON(t, srv.URL+"/v1/load_lora_adapter", "", fmt.Sprintf(`{"lora_name":"b","lora_path":%q}`, dir)); code != 200 {
		t.Fatalf("load b: HTTP %d", code)
	}
	if code, _ := postJSON(t, srv.URL+"/v1/unload_lora_adapter", "", `{"lora_name":"b"}`); code != 200 {
		t.Fatalf("unload b: HTTP %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		alive := 0
		for _, p := range built {
			if p.Value() != nil {
				alive++
			}
		}
		if alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d unloaded adapters are still in memory", alive, len(built))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
