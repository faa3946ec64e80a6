package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/serve"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cyclealign")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		n++
	}
	return n
}

// TestAlignKillAndResume kills a real align process with SIGKILL at a random point, resumes
// it, and compares the final model with an uninterrupted run's: sampling in-process, and
// sampling from a generation server (cyclealign serve, over HTTP) kept on the LoRA adapter,
// where the resumed run must push the adapter of the weights it resumed from.
func TestAlignKillAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	t.Run("in-process", func(t *testing.T) { killAndResume(t, bin, "", "", "") })
	t.Run("remote-lora", func(t *testing.T) {
		b, _ := model.NewBackend()
		dir, _ := filepath.Abs(filepath.Join("..", "..", "testdata", "tiny-llama-metaspace"))
		base, err := model.Load(b, dir)
		if err != nil {
			t.Fatal(err)
		}
		srv := serve.New(base, serve.Options{ModelName: "base", LoadAdapter: func(path string) (*model.Model, error) {
			m, err := model.Load(b, dir)
			if err != nil {
				return nil, err
			}
			return m, m.LoadAdapter(path, 0)
		}})
		hs := httptest.NewServer(srv)
		defer func() { hs.Close(); srv.Close() }()
		killAndResume(t, bin, "", "", fmt.Sprintf("lora_r: 4\nlora_alpha: 8\ngenerate_url: %s/v1\ngenerate_model: base\n", hs.URL))
	})
}

// killAndResume runs align on modelDir ("" the tiny llama) with the prompts file given ("" eight
// HH prompts) uninterrupted, then killed with SIGKILL at a random point and resumed, and checks
// that both end with the same weights. It returns the uninterrupted run's directory and the
// black-box that ranked for both.
func killAndResume(t *testing.T, bin, modelDir, prompts, extra string) (string, *llmtest.Server) {
	s := llmtest.New(llmtest.RankBy(func(a, b string) bool { return len(a) < len(b) }))
	t.Cleanup(s.Close)
	dir := t.TempDir()
	if prompts == "" {
		prompts = filepath.Join(dir, "prompts.jsonl")
		var b strings.Builder
		for _, x := range []string{"bake bread", "swim", "save money", "sleep", "cook rice", "paint", "run", "read"} {
			fmt.Fprintf(&b, "{\"prompt\": %q}\n", "\n\nHuman: How do I "+x+"?\n\nAssistant:")
		}
		os.WriteFile(prompts, []byte(b.String()), 0o644)
	}
	model, _ := filepath.Abs(filepath.Join("..", "..", "testdata", "tiny-llama-metaspace"))
	if modelDir != "" {
		model = modelDir
	}
	cfg := filepath.Join(dir, "run.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`model: %s
prompts: %s
steps: 5
batch_size: 3
n: 3
interactions: 2
max_new_tokens: 12
lr: 0.003
warmup_ratio: 0
seed: 7
blackbox:
  url: %s
  model: judge
%s`, model, prompts, s.BaseURL(), extra)), 0o644)
	align := func(args ...string) *exec.Cmd {
		c := exec.Command(bin, append([]string{"align", "--quiet"}, args...)...)
		c.Env = append(os.Environ(), "OPENAI_API_KEY=sk-kill-test")
		return c
	}
	whole := filepath.Join(dir, "whole")
	if out, err := align("--config", cfg, "--out", whole).CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}
	total := countLines(filepath.Join(whole, "journal.jsonl"))
	if total != 5*3*2 {
		t.Fatalf("uninterrupted journal has %d records", total)
	}
	cut := filepath.Join(dir, "cut")
	target := 1 + rand.IntN(total-2)
	c := align("--config", cfg, "--out", cut)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for countLines(filepath.Join(cut, "journal.jsonl")) < target && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	t.Logf("killed after %d of %d journal records", countLines(filepath.Join(cut, "journal.jsonl")), total)
	if out, err := align("--resume", cut).CombinedOutput(); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	a, err := hf.ReadModelTensors(filepath.Join(whole, "model"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := hf.ReadModelTensors(filepath.Join(cut, "model"))
	if err != nil {
		t.Fatal(err)
	}
	for name, x := range a {
		for i := range x.Data {
			if x.Data[i] != r[name].Data[i] {
				t.Fatalf("%s[%d]: uninterrupted %v, killed and resumed %v", name, i, x.Data[i], r[name].Data[i])
			}
		}
	}
	if n := countLines(filepath.Join(cut, "journal.jsonl")); n != total {
		t.Fatalf("resumed journal has %d records, want %d", n, total)
	}
	// Every record names the weights that sampled it, the same as in the uninterrupted run.
	weights := func(dir string) []string {
		var out []string
		f, _ := os.ReadFile(filepath.Join(dir, "journal.jsonl"))
		for _, l := range strings.Split(strings.TrimSpace(string(f)), "\n") {
			var r struct{ Weights string }
			json.Unmarshal([]byte(l), &r)
			out = append(out, r.Weights)
		}
		return out
	}
	if w, c := weights(whole), weights(cut); fmt.Sprint(w) != fmt.Sprint(c) || extra != "" && w[len(w)-1] == "" {
		t.Fatalf("sampling weights: uninterrupted %v, resumed %v", w, c)
	}
	var ms []map[string]any
	f, _ := os.ReadFile(filepath.Join(cut, "metrics.jsonl"))
	for _, l := range strings.Split(strings.TrimSpace(string(f)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	for i, m := range ms {
		if int(m["step"].(float64)) != i+1 {
			t.Fatalf("metrics line %d is step %v", i, m["step"])
		}
	}
	// The API key never reaches the run directory.
	filepath.Walk(cut, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("sk-kill-test")) {
				t.Errorf("%s holds the API key", p)
			}
		}
		return nil
	})
	return whole, s
}

func TestAlignDryRunAndUnreachable(t *testing.T) {
	dir := t.TempDir()
	prompts := filepath.Join(dir, "p.jsonl")
	os.WriteFile(prompts, []byte(`{"prompt": "\n\nHuman: hi\n\nAssistant:"}`+"\n"), 0o644)
	model := filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	var plan struct {
		Requests int     `json:"blackbox_requests"`
		Cost     float64 `json:"cost_est"`
		Known    bool    `json:"cost_known"`
	}
	out := run(t, "align", "--dry-run", "--json", "--model", model, "--prompts", prompts, "--out", filepath.Join(dir, "r"),
		"--blackbox-url", "http://127.0.0.1:9/v1", "--blackbox-model", "gpt-4o-mini", "--steps", "5", "--batch-size", "2")
	if err := json.Unmarshal(out, &plan); err != nil {
		t.Fatal(err)
	}
	if plan.Requests != 5*2*5 || !plan.Known || plan.Cost <= 0 { // T=5 interactions by default
		t.Fatalf("plan %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "r")); err == nil {
		t.Fatal("a dry run created the run directory")
	}
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetArgs([]string{"align", "--quiet", "--model", model, "--prompts", prompts, "--out", filepath.Join(dir, "r2"),
		"--blackbox-url", "http://127.0.0.1:9/v1", "--blackbox-model", "judge", "--request-timeout", "2s"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "cannot reach the black-box") {
		t.Fatalf("unreachable black-box: %v", err)
	}
}
