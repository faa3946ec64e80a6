package cycle

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/serve"
)

var tinyLlama = filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")

// genServer is cyclealign serve standing in for vLLM: the tiny llama as "base", adapters loaded
// at run time. withoutLoRA hides the LoRA routes (a server that lacks them). It listens on
// addr ("" picks a port) and can be closed and started again there (a restart).
type genServer struct {
	addr string
	srv  *http.Server
	s    *serve.Server
}

func startGen(t *testing.T, addr string, withoutLoRA bool) *genServer {
	t.Helper()
	b, _ := model.NewBackend()
	base, err := model.Load(b, tinyLlama)
	if err != nil {
		t.Fatal(err)
	}
	s := serve.New(base, serve.Options{ModelName: "base", MaxTokens: 64, LoadAdapter: func(path string) (*model.Model, error) {
		m, err := model.Load(b, tinyLlama)
		if err != nil {
			return nil, err
		}
		return m, m.LoadAdapter(path, 0)
	}})
	var h http.Handler = s
	if withoutLoRA {
		mux := http.NewServeMux()
		mux.Handle("/v1/models", s)
		mux.Handle("/v1/completions", s)
		h = mux
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := &genServer{addr: ln.Addr().String(), srv: &http.Server{Handler: h}, s: s}
	go g.srv.Serve(ln)
	t.Cleanup(g.stop)
	return g
}

func (g *genServer) stop() { g.srv.Close(); g.s.Close() }

func remoteConfig(t *testing.T, g *genServer) Config {
	c := Defaults()
	c.Model, c.Prompts, c.Out = tinyLlama, writePrompts(t, topics[:8]), t.TempDir()
	c.Steps, c.BatchSize, c.N, c.Interactions = 3, 2, 3, 2
	c.MaxNewTokens, c.LR, c.WarmupRatio, c.Seed, c.PoolSize = 12, 5e-2, 0, 1, 5
	c.LoRAR, c.LoRAAlpha = 4, 8
	c.Blackbox.Lexicon = "harmless"
	c.GenerateURL, c.GenerateModel = "http://"+g.addr+"/v1", "base"
	return c.Effective()
}

// TestRemoteGenerationFollowsLoRA aligns with candidates sampled by a server (cyclealign serve,
// over HTTP) that is kept on the current adapter: every step's records name the adapter of the
// optimiser steps before it, the served adapter decodes as the in-process model, and a server
// restart mid-run is waited for and the adapter pushed again.
func TestRemoteGenerationFollowsLoRA(t *testing.T) {
	g := startGen(t, "", false)
	cfg := remoteConfig(t, g)
	ctx := context.Background()
	r, err := Prepare(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.StopAfter = 1
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// The server now restarts (without adapters) while the runner still names the adapter it
	// pushed: the next sampling fails, is waited out, and the adapter is pushed again.
	if err := r.push(ctx); err != nil {
		t.Fatal(err)
	}
	pushed := r.remote.serving
	g.stop()
	g = startGen(t, g.addr, false)
	r.StopAfter = 0
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// The tokens the server generated are counted from its usage reports.
	for _, m := range readLines[StepMetrics](t, filepath.Join(cfg.Out, MetricsFile)) {
		if m.GenTokens < cfg.BatchSize*cfg.N {
			t.Fatalf("step %d: %d generated tokens counted for %d candidates", m.Step, m.GenTokens, cfg.BatchSize*cfg.N)
		}
	}
	recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile))
	want := map[int]string{1: "base-cyclealign-step-0", 2: pushed, 3: "base-cyclealign-step-4"}
	for _, rec := range recs {
		if rec.Weights != want[rec.Step] {
			t.Fatalf("step %d sampled by %q, want %q", rec.Step, rec.Weights, want[rec.Step])
		}
	}
	if pushed != "base-cyclealign-step-2" {
		t.Fatalf("after one step the served adapter is %q", pushed)
	}
	// The final weights, pushed, decode on the server as in-process.
	if err := r.push(ctx); err != nil {
		t.Fatal(err)
	}
	opt := generate.Options{N: 1, MaxNewTokens: 12, Greedy: true, TopP: 1}
	ps := []string{prompt("bake bread"), prompt("brew tea")}
	ids := [][]int{r.M.Tokenizer.Encode(ps[0], true), r.M.Tokenizer.Encode(ps[1], true)}
	served, _, err := r.remote.api.Text(ctx, r.remote.serving, ids, opt)
	if err != nil {
		t.Fatal(err)
	}
	local, err := generate.Text(ctx, r.M, ps, opt)
	if err != nil {
		t.Fatal(err)
	}
	base, _, _ := r.remote.api.Text(ctx, "base", ids, opt)
	for i := range ps {
		if s, l := served[i][0], local[i][0]; s.Text != l.Text || s.FinishReason != l.FinishReason {
			t.Fatalf("prompt %d: served %q (%s), in-process %q (%s)", i, s.Text, s.FinishReason, l.Text, l.FinishReason)
		}
	}
	if fmt.Sprint(base) == fmt.Sprint(served) {
		t.Fatalf("the adapter changed nothing (%v): the check would pass with the base", served)
	}
}

func TestRemoteGenerationRefusesServerWithoutLoRA(t *testing.T) {
	g := startGen(t, "", true)
	cfg := remoteConfig(t, g)
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/v1/load_lora_adapter") || !strings.Contains(err.Error(), "VLLM_ALLOW_RUNTIME_LORA_UPDATING") {
		t.Fatalf("a server without the LoRA API: %v", err)
	}
	if recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile)); len(recs) != 0 {
		t.Fatalf("%d records written before the refusal", len(recs))
	}
	// Full fine-tuning needs SGLang's /update_weights_from_disk, which cyclealign serve lacks.
	full := remoteConfig(t, startGen(t, "", false))
	full.LoRAR = 0
	r2, err := Prepare(context.Background(), full)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "/update_weights_from_disk") || !strings.Contains(err.Error(), "--lora-r") {
		t.Fatalf("full fine-tuning against a server without /update_weights_from_disk: %v", err)
	}
}

// A prompt longer than the model's positions is fitted (oldest turns first) before it is sent,
// as in-process sampling fits it, instead of being refused by the server.
func TestRemoteGenerationFitsLongPrompts(t *testing.T) {
	g := startGen(t, "", false)
	cfg := remoteConfig(t, g)
	cfg.Prompts = writePrompts(t, []string{strings.Repeat("bake bread and then ", 400) + "rest", "brew tea"})
	cfg.Steps, cfg.BatchSize, cfg.Interactions = 1, 2, 1
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := len(r.M.Tokenizer.Encode(r.Prompts[0].Text, true)); n <= r.M.Config.MaxPositions {
		t.Fatalf("the long prompt has %d tokens, not more than the %d positions", n, r.M.Config.MaxPositions)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile)); len(recs) != 2 || len(recs[0].Candidates) != cfg.N {
		t.Fatalf("records: %+v", recs)
	}
}
