package cycle

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/lockfile"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/serve"
)

var topics = []string{"bake bread", "fix a flat tire", "learn to swim", "write a poem", "save money", "plant tomatoes",
	"train a puppy", "make coffee", "study for exams", "paint a room", "tie a tie", "start running",
	"cook rice", "clean a keyboard", "fold a shirt", "sleep better", "brew tea", "wash a car"}

func prompt(t string) string { return "\n\nHuman: How do I " + t + "?\n\nAssistant:" }

func writePrompts(t *testing.T, ts []string) string {
	p := filepath.Join(t.TempDir(), "prompts.jsonl")
	var b strings.Builder
	for _, x := range ts {
		line, _ := json.Marshal(map[string]string{"prompt": prompt(x)})
		b.Write(append(line, '\n'))
	}
	os.WriteFile(p, []byte(b.String()), 0o644)
	return p
}

// shorterWithNoise is a black-box with a hidden preference (shorter replies) and noise: with
// probability 0.2 it swaps two adjacent places of its ranking. Deterministic per request.
func shorterWithNoise() llmtest.Script {
	return func(_ int, req llmtest.Request) llmtest.Reply {
		c := llmtest.Candidates(req)
		order := llmtest.Order(c, func(a, b string) bool { return len(a) < len(b) })
		h := uint64(0)
		for _, x := range c {
			for i := 0; i < len(x); i++ {
				h = h*31 + uint64(x[i])
			}
		}
		rng := rand.New(rand.NewPCG(h, 1))
		if len(order) > 1 && rng.Float64() < 0.2 {
			i := rng.IntN(len(order) - 1)
			order[i], order[i+1] = order[i+1], order[i]
		}
		return llmtest.Reply{Content: "Reasoning: shorter is better.\n" + llmtest.FormatRanking(order)}
	}
}

func testConfig(t *testing.T, server *llmtest.Server, promptFile string) Config {
	c := Defaults()
	c.Model = filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	c.Prompts = promptFile
	c.Out = t.TempDir()
	c.Steps, c.BatchSize, c.N, c.Interactions = 10, 4, 4, 2
	c.MaxNewTokens, c.LR, c.WarmupRatio, c.Seed = 16, 1e-2, 0, 1
	c.PoolSize = 5
	c.Blackbox.URL, c.Blackbox.Model = server.BaseURL(), "judge"
	return c.Effective()
}

// pairAccuracy is the fraction of candidate pairs the white-box orders as the hidden
// preference does (shorter first), over fixed candidate sets.
func pairAccuracy(t *testing.T, m *model.Model, prompts []string, cands [][]string) float64 {
	var ps, rs []string
	for i, p := range prompts {
		for _, c := range cands[i] {
			if c != "" {
				ps, rs = append(ps, p), append(rs, c)
			}
		}
	}
	sc, err := m.ScoreText(context.Background(), ps, rs)
	if err != nil {
		t.Fatal(err)
	}
	good, all := 0, 0
	for k := 0; k < len(rs); k++ {
		for l := k + 1; l < len(rs); l++ {
			if ps[k] != ps[l] || len(rs[k]) == len(rs[l]) {
				continue
			}
			all++
			if (len(rs[k]) < len(rs[l])) == (sc[k].Mean > sc[l].Mean) {
				good++
			}
		}
	}
	return float64(good) / float64(all)
}

func readLines[T any](t *testing.T, path string) []T {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	train, heldOut := topics[:12], topics[12:]
	cfg := testConfig(t, s, writePrompts(t, train))
	ctx := context.Background()
	r, err := Prepare(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Fixed held-out candidates from the starting model.
	var hp []string
	for _, x := range heldOut {
		hp = append(hp, prompt(x))
	}
	opt := generate.Defaults()
	opt.N, opt.MaxNewTokens, opt.Seed = 8, 16, 99
	gen, err := generate.Text(ctx, r.M, hp, opt)
	if err != nil {
		t.Fatal(err)
	}
	hc := make([][]string, len(gen))
	for i, g := range gen {
		for _, c := range g {
			hc[i] = append(hc[i], c.Text)
		}
	}
	before := pairAccuracy(t, r.M, hp, hc)
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	after := pairAccuracy(t, r.M, hp, hc)
	t.Logf("held-out pairwise agreement with the hidden preference: %.3f -> %.3f", before, after)
	if after <= before {
		t.Fatalf("white-box agreement with the preference did not rise: %.3f -> %.3f", before, after)
	}

	recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile))
	if len(recs) != cfg.Steps*cfg.BatchSize*cfg.Interactions {
		t.Fatalf("journal has %d records, want %d", len(recs), cfg.Steps*cfg.BatchSize*cfg.Interactions)
	}
	entered := 0
	for _, rec := range recs {
		if len(rec.Candidates) != 4 || len(rec.WhiteScores) != 4 || len(rec.WhiteRanking) != 4 || len(rec.RequestIDs) == 0 {
			t.Fatalf("incomplete record %+v", rec)
		}
		if !slices.Equal(rec.Agreement, blackbox.LCS(rec.BlackRanking, rec.WhiteRanking)) {
			t.Fatalf("agreement %v is not LCS(%v, %v)", rec.Agreement, rec.BlackRanking, rec.WhiteRanking)
		}
		if rec.EnteredPool != (len(rec.Agreement) >= cfg.Tau) {
			t.Fatalf("|A|=%d, tau=%d, entered pool: %v", len(rec.Agreement), cfg.Tau, rec.EnteredPool)
		}
		if rec.EnteredPool {
			entered++
		}
		if len(rec.Demos) < 2 || rec.Demos[0] != DefaultDemos()[0].Prompt {
			t.Fatalf("static demonstrations missing: %v", rec.Demos)
		}
		for _, d := range rec.Demos[2:] {
			if d == rec.Prompt {
				t.Fatal("a prompt was shown its own demonstration")
			}
		}
	}
	if entered == 0 {
		t.Fatal("no example ever entered the pool")
	}
	var pool Pool
	b, _ := os.ReadFile(filepath.Join(cfg.Out, PoolFile))
	json.Unmarshal(b, &pool)
	if len(pool.Entries) == 0 || len(pool.Entries) > cfg.PoolSize {
		t.Fatalf("pool has %d entries (max %d)", len(pool.Entries), cfg.PoolSize)
	}
	for _, e := range pool.Entries {
		if len(e.Demo.Ranking) < cfg.Tau {
			t.Fatalf("pool entry with |A| = %d < tau", len(e.Demo.Ranking))
		}
	}
	ms := readLines[StepMetrics](t, filepath.Join(cfg.Out, MetricsFile))
	if len(ms) != cfg.Steps || ms[len(ms)-1].PoolSize != len(pool.Entries) || ms[0].APIRequests != cfg.BatchSize*cfg.Interactions {
		t.Fatalf("metrics: %d lines, last %+v", len(ms), ms[len(ms)-1])
	}
	// Later interactions show dynamic demonstrations to the black-box.
	found := false
	for _, req := range s.Requests() {
		if len(req.Messages) > 1+2*2 {
			found = true
		}
	}
	if !found {
		t.Fatal("no request carried dynamic demonstrations")
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "model", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
}

func TestBaselines(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	pf := writePrompts(t, topics[:8])
	for _, method := range []Method{StaticICL, StaticICLMatched, NoAgreement, SFTBest} {
		t.Run(string(method), func(t *testing.T) {
			cfg := testConfig(t, s, pf)
			cfg.Method, cfg.Steps = method, 2
			cfg = cfg.Effective()
			r, err := Prepare(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile))
			var pool Pool
			b, _ := os.ReadFile(filepath.Join(cfg.Out, PoolFile))
			json.Unmarshal(b, &pool)
			switch method {
			case StaticICL:
				if len(recs) != 2*cfg.BatchSize || len(pool.Entries) != 0 {
					t.Fatalf("static-icl: %d records, pool %d", len(recs), len(pool.Entries))
				}
			case StaticICLMatched:
				// CycleAlign's interactions and optimiser steps, without dynamic demonstrations.
				ms := readLines[StepMetrics](t, filepath.Join(cfg.Out, MetricsFile))
				if cfg.Interactions != 2 || len(recs) != 2*cfg.BatchSize*cfg.Interactions || len(ms[0].AgreementByIter) != 2 {
					t.Fatalf("static-icl-matched: T=%d, %d records", cfg.Interactions, len(recs))
				}
				for _, rec := range recs {
					if len(rec.Demos) != min(cfg.NumStatic, len(DefaultDemos())) {
						t.Fatalf("static-icl-matched showed %d demonstrations: %v", len(rec.Demos), rec.Demos)
					}
				}
			case NoAgreement:
				ranked := 0
				for _, rec := range recs {
					if !rec.Unranked {
						ranked++
						if !rec.EnteredPool {
							t.Fatal("no-agreement left a ranked example out of the pool")
						}
					}
				}
				if len(pool.Entries) != min(cfg.PoolSize, 8) && len(pool.Entries) != cfg.PoolSize {
					t.Fatalf("no-agreement pool %d", len(pool.Entries))
				}
			case SFTBest:
				ms := readLines[StepMetrics](t, filepath.Join(cfg.Out, MetricsFile))
				if ms[0].RankTerm != 0 || ms[0].SFTTerm <= 0 || ms[0].Loss != ms[0].SFTTerm {
					t.Fatalf("sft-best trains only the SFT term: %+v", ms[0])
				}
			}
		})
	}
}

// TestResumeInProcess stops a run after a step whose checkpoint was not written, then resumes
// and compares everything with an uninterrupted run.
func TestResumeInProcess(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	pf := writePrompts(t, topics[:8])
	run := func(cfg Config, stopAfter int) *Runner {
		r, err := Prepare(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.StopAfter = stopAfter
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return r
	}
	full := testConfig(t, s, pf)
	full.Steps, full.SaveEvery = 4, 2
	a := run(full, 0)
	cut := full
	cut.Out = t.TempDir()
	run(cut, 3) // checkpoint at step 2; step 3's work is lost
	n := len(s.Requests())
	b := run(cut, 0)
	// Step 3 is redone from the cache; only step 4 is new.
	if extra := len(s.Requests()) - n; extra != full.BatchSize*full.Interactions {
		t.Fatalf("the resumed run sent %d black-box requests, want %d (step 4 only)", extra, full.BatchSize*full.Interactions)
	}
	ta, _ := a.M.Tensors()
	tb, _ := b.M.Tensors()
	for name, x := range ta {
		if !slices.Equal(x.Data, tb[name].Data) {
			t.Fatalf("%s differs after resume", name)
		}
	}
	// The journal keeps the label order the black-box saw, and config.yaml the λ used.
	for _, rec := range readLines[Record](t, filepath.Join(full.Out, JournalFile)) {
		if !rec.Unranked && len(rec.Permutation) != len(rec.Candidates) {
			t.Fatalf("record without the permutation shown: %+v", rec.Permutation)
		}
	}
	if rc, _ := LoadRunConfig(full.Out); rc.SFTWeight != 0.5 || rc.Interactions != full.Interactions {
		t.Fatalf("config.yaml: sft_weight %v (want the 0.5 PRO uses), interactions %d", rc.SFTWeight, rc.Interactions)
	}
	ja := readLines[Record](t, filepath.Join(full.Out, JournalFile))
	jb := readLines[Record](t, filepath.Join(cut.Out, JournalFile))
	if len(ja) != len(jb) {
		t.Fatalf("journal %d vs %d records", len(ja), len(jb))
	}
	for i := range ja {
		if fmt.Sprint(ja[i].BlackRanking, ja[i].Candidates) != fmt.Sprint(jb[i].BlackRanking, jb[i].Candidates) {
			t.Fatalf("journal record %d differs", i)
		}
	}
}

func TestBadInput(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	bad := filepath.Join(t.TempDir(), "p.jsonl")
	os.WriteFile(bad, []byte(`{"prompt": "a"}`+"\n"+`{"prompt": }`+"\n"), 0o644)
	cfg := testConfig(t, s, bad)
	if _, err := Prepare(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad prompt file: %v", err)
	}
	demos := filepath.Join(t.TempDir(), "demos.json")
	os.WriteFile(demos, []byte(`[{"prompt": "p", "candidates": ["a", "b", "c"], "ranking": [0, 2, 2]}]`), 0o644)
	cfg = testConfig(t, s, writePrompts(t, topics[:2]))
	cfg.StaticDemos = demos
	if _, err := Prepare(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "demonstration 0") {
		t.Fatalf("bad demonstrations: %v", err)
	}
	// An unreachable black-box is reported before any model is loaded or trained.
	dead := llmtest.New(shorterWithNoise())
	url := dead.BaseURL()
	dead.Close()
	cfg = testConfig(t, s, writePrompts(t, topics[:2]))
	cfg.Blackbox.URL = url
	if _, err := Prepare(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "cannot reach the black-box") {
		t.Fatalf("unreachable black-box: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "checkpoints")); err == nil {
		t.Fatal("a run started against an unreachable black-box")
	}
}

func TestEvalEvery(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	cfg := testConfig(t, s, writePrompts(t, topics[:6]))
	cfg.Steps, cfg.EvalEvery, cfg.EvalN = 2, 1, 3
	be, _ := model.NewBackend()
	base, err := model.Load(be, cfg.Model)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := base.WithRewardHead(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg.EvalReward = filepath.Join(t.TempDir(), "rm")
	if err := rm.Save(cfg.EvalReward); err != nil {
		t.Fatal(err)
	}
	pairs := filepath.Join(t.TempDir(), "pairs.jsonl")
	var b strings.Builder
	for _, x := range topics[12:] {
		line, _ := json.Marshal(map[string]string{"chosen": prompt(x) + " Here is how.", "rejected": prompt(x) + " No."})
		b.Write(append(line, '\n'))
	}
	os.WriteFile(pairs, []byte(b.String()), 0o644)
	cfg.EvalPrompts = pairs
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	ms := readLines[StepMetrics](t, filepath.Join(cfg.Out, MetricsFile))
	for _, m := range ms {
		if _, ok := m.Eval["reward"]; !ok {
			t.Fatalf("step %d has no evaluation: %v", m.Step, m.Eval)
		}
		if acc, ok := m.Eval["preference_accuracy"]; !ok || acc < 0 || acc > 1 {
			t.Fatalf("step %d preference accuracy %v", m.Step, m.Eval)
		}
	}
}

// TestServedModelAsBlackBox points the ranker at cyclealign serve: a tiny random model cannot
// rank, so prompts come back unranked with their raw replies, and the run goes on.
func TestServedModelAsBlackBox(t *testing.T) {
	b, _ := model.NewBackend()
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel"))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve.New(m, serve.Options{ModelName: "tiny-judge", MaxTokens: 64, TruncatePrompts: true})
	hs := httptest.NewServer(srv)
	defer func() { hs.Close(); srv.Close() }()
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	cfg := testConfig(t, s, writePrompts(t, topics[:4]))
	cfg.Steps, cfg.Interactions, cfg.NumStatic = 1, 1, 0
	cfg.Blackbox.URL, cfg.Blackbox.Model, cfg.Blackbox.MaxTokens = hs.URL+"/v1", "tiny-judge", 24
	cfg.Blackbox.Instruction = filepath.Join(t.TempDir(), "instruction.txt")
	os.WriteFile(cfg.Blackbox.Instruction, []byte("Rank the replies."), 0o644)
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Nothing parsed, so nothing trained: the run must fail, pointing at the raw replies.
	if err := r.Run(context.Background()); !errors.Is(err, ErrNothingTrained) || !strings.Contains(err.Error(), "raw_replies") {
		t.Fatalf("a run whose every prompt came back unranked ended with %v", err)
	}
	recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile))
	if len(recs) != cfg.BatchSize {
		t.Fatalf("%d records", len(recs))
	}
	for _, rec := range recs {
		if len(rec.RawReplies) == 0 || (rec.Unranked && rec.BlackRanking != nil) {
			t.Fatalf("record %+v", rec)
		}
	}
}

// TestMovedRunResumesInPlace: a run directory moved elsewhere resumes from where it is now,
// with its own cache (nothing paid again), and never writes to its old path. Runs written by
// earlier versions, whose config.yaml holds the cache's absolute path, move too.
func TestMovedRunResumesInPlace(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	cfg := testConfig(t, s, writePrompts(t, topics[:8]))
	cfg.Steps, cfg.SaveEvery = 2, 1
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.StopAfter = 1
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Close()
	old := cfg.Out
	// What earlier versions wrote: the derived cache path, absolute, inside the run.
	legacy := cfg
	legacy.Blackbox.Cache = filepath.Join(old, "cache")
	if err := WriteConfig(legacy); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(old, moved); err != nil {
		t.Fatal(err)
	}
	rc, err := LoadRunConfig(moved)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Out != moved || rc.Blackbox.Cache != filepath.Join(moved, "cache") {
		t.Fatalf("resolved out %q cache %q; want both inside %s", rc.Out, rc.Blackbox.Cache, moved)
	}
	n := len(s.Requests())
	r2, err := Prepare(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if extra := len(s.Requests()) - n; extra != cfg.BatchSize*cfg.Interactions {
		t.Fatalf("the moved run sent %d requests; want %d (step 2 only)", extra, cfg.BatchSize*cfg.Interactions)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the moved run wrote to its old path %s", old)
	}
	if ms := readLines[StepMetrics](t, filepath.Join(moved, MetricsFile)); len(ms) != 2 || ms[1].Step != 2 {
		t.Fatalf("metrics of the moved run: %d lines", len(ms))
	}
	if b, _ := os.ReadFile(filepath.Join(moved, ConfigFile)); strings.Contains(string(b), old) {
		t.Fatalf("config.yaml still names the old path:\n%s", b)
	}
}

func TestSecondRunnerOnADirectoryIsRefused(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	cfg := testConfig(t, s, writePrompts(t, topics[:4]))
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := Prepare(context.Background(), cfg); !errors.Is(err, lockfile.ErrBusy) || !strings.Contains(err.Error(), cfg.Out) {
		t.Fatalf("second Prepare on %s: %v; want it refused as busy", cfg.Out, err)
	}
}

// TestBlankCandidatesNeverAbortARun: with stop strings that end most replies at once, many are blank
// even after their re-sample; a blank candidate leaves the ranking (recorded in the journal),
// a prompt with fewer than two non-blank candidates is skipped, and the run completes.
func TestBlankCandidatesNeverAbortARun(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	cfg := testConfig(t, s, writePrompts(t, topics[:4]))
	cfg.Steps, cfg.Stop = 2, nil
	for c := ' '; c <= '~'; c++ { // most replies end before their first character
		if c != 'a' {
			cfg.Stop = append(cfg.Stop, string(c))
		}
	}
	r, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Run(context.Background()); err != nil {
		t.Fatalf("a blank candidate aborted the run: %v", err)
	}
	blank := 0
	for _, rec := range readLines[Record](t, filepath.Join(cfg.Out, JournalFile)) {
		for _, k := range rec.NoTokens {
			if rec.Candidates[k] != "" {
				t.Fatalf("candidate %d %q recorded as having no tokens", k, rec.Candidates[k])
			}
			blank++
		}
		if left := len(rec.Candidates) - len(rec.NoTokens); !rec.Unranked && left < 2 && rec.Skipped == "" {
			t.Fatalf("a prompt with %d usable candidates was not marked skipped: %+v", left, rec)
		}
	}
	if blank == 0 {
		t.Fatal("the test produced no blank candidates; it checks nothing")
	}
}

// A candidate that ended its turn is scored and trained with the turn's end (the stop string,
// or EOS without one); one cut by the token budget is not. Without the end the model is never
// shown where a reply stops.
func TestEndedCandidatesKeepTheirEnd(t *testing.T) {
	s := llmtest.New(shorterWithNoise())
	defer s.Close()
	cfg := testConfig(t, s, writePrompts(t, topics[:4]))
	const stop = "th" // common enough in the tiny model's samples to end some, not all
	cfg.Steps, cfg.Interactions, cfg.Stop = 1, 1, []string{stop}
	ctx := context.Background()
	r, err := Prepare(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	be, err := model.NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	m0, err := model.Load(be, cfg.Model)
	if err != nil {
		t.Fatal(err)
	}
	init := &Runner{M: m0, Cfg: r.Cfg}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
	recs := readLines[Record](t, filepath.Join(cfg.Out, JournalFile))
	var ps, rs, plain [][]int
	var ended []bool
	for _, rec := range recs {
		if len(rec.Ended) != len(rec.Candidates) {
			t.Fatalf("ended %v for %d candidates", rec.Ended, len(rec.Candidates))
		}
		for k, c := range rec.Candidates {
			if rec.Ended[k] && strings.Contains(c, stop) {
				t.Fatalf("candidate %q ended on the stop string but still holds it", c)
			}
			ps = append(ps, init.M.Tokenizer.Encode(rec.Prompt, true))
			rs = append(rs, init.responseIDs(c, rec.Ended[k]))
			plain = append(plain, init.M.Tokenizer.Encode(c, false))
			ended = append(ended, rec.Ended[k])
		}
	}
	if !slices.Contains(ended, true) || !slices.Contains(ended, false) {
		t.Fatalf("want candidates that ended and candidates cut by the budget: %v", ended)
	}
	with, err := init.M.ScoreIDs(ctx, ps, rs)
	if err != nil {
		t.Fatal(err)
	}
	without, err := init.M.ScoreIDs(ctx, ps, plain)
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for _, rec := range recs {
		for j := range rec.Candidates {
			if d := rec.WhiteScores[j] - with[k].Mean; d > 1e-4 || d < -1e-4 {
				t.Fatalf("white score %.6f, want %.6f (candidate %d of %q)", rec.WhiteScores[j], with[k].Mean, j, rec.Prompt)
			}
			if want := init.M.Tokenizer.Encode(rec.Candidates[j]+stop, false); ended[k] && !slices.Equal(rs[k], want) {
				t.Fatalf("ended candidate trained as %v, want %v", rs[k], want)
			}
			if ended[k] && with[k].Mean == without[k].Mean {
				t.Fatalf("the end changed nothing in the score of %q", rec.Candidates[j])
			}
			k++
		}
	}
	// Training saw the same tokens (prompt and response, every candidate of the one step).
	trained := 0
	for k := range ps {
		trained += len(ps[k]) + len(rs[k])
	}
	if ms := readLines[StepMetrics](t, filepath.Join(cfg.Out, MetricsFile)); ms[0].TrainTokens != trained {
		t.Fatalf("trained on %d tokens, want %d (the candidates with their ends)", ms[0].TrainTokens, trained)
	}
	// Without a stop string the end is EOS; the budget still caps the response.
	init.Cfg.Stop, init.Cfg.MaxResponse = nil, 3
	eos := init.M.Config.EOSTokenIDs[0]
	if ids := init.responseIDs("a b", true); ids[len(ids)-1] != eos {
		t.Fatalf("ended without a stop string: %v, want EOS %d last", ids, eos)
	}
	if ids := init.responseIDs("a b", false); slices.Contains(ids, eos) {
		t.Fatalf("cut by the budget: %v holds EOS", ids)
	}
	if ids := init.responseIDs("a b c d e f", true); len(ids) != 3 {
		t.Fatalf("%d ids past max_response_tokens 3", len(ids))
	}
}

// TestValidateNamesTheSetting: a bad setting is refused with its name; the defaults pass.
func TestValidateNamesTheSetting(t *testing.T) {
	c := Defaults()
	c.Model, c.Prompts, c.Out = "m", "p.jsonl", "run"
	if err := c.Effective().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for field, set := range map[string]func(*Config){
		"save_dtype":  func(c *Config) { c.SaveDType = "fp8" },
		"demo_select": func(c *Config) { c.DemoSelect = "best" },
		"top_p":       func(c *Config) { c.TopP = 1.5 },
		"lora_r":      func(c *Config) { c.LoRAR = -1 },
		"demo_weight": func(c *Config) { c.Blackbox.DemoWeight = -1 },
	} {
		bad := c
		set(&bad)
		if err := bad.Effective().Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want an error naming it", field, err)
		}
	}
}
