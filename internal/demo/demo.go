// Package demo runs CycleAlign end to end on the embedded default: the HH-RLHF sample, the
// base model and the two reward models the project trained from it. The judge reward model
// plays the black-box (directly, or behind a loopback OpenAI-compatible server); the evaluator
// reward model, which alignment never sees, scores the base and the aligned model.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/cyclealign/cyclealign/internal/assets"
	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/cycle"
	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/eval"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/report"
)

// Options size the demo.
type Options struct {
	Out         string // run directory
	AssetsDir   string // where the embedded default is unpacked ("" = user cache)
	Small       bool   // a reduced run for CI: every phase, a few seconds each
	JudgeServer bool   // put the judge behind a loopback OpenAI-compatible server
	Steps       int    // 0: the size's default (10, or 2 when Small)
	EvalPrompts int    // 0: the size's default
	Seed        uint64
	LR          float64 // 0: 2e-4
	Loss        string  // "": pro
	Progress    io.Writer
}

// Result is what the demo measured.
type Result struct {
	Base    *eval.Report `json:"base"`
	Aligned *eval.Report `json:"aligned"`
	Run     string       `json:"run"`
	Table   string       `json:"table"`
}

// Config returns the CycleAlign configuration the demo runs.
func Config(o Options, dir string) cycle.Config {
	c := cycle.Defaults()
	c.Model = filepath.Join(dir, "models", "base")
	c.Out, c.Seed = o.Out, o.Seed
	c.Steps, c.BatchSize, c.N, c.Interactions, c.MaxNewTokens = 10, 4, 4, 3, 48
	c.LR, c.WarmupRatio, c.MaxResponse = 2e-4, 0.1, 64
	if o.Small {
		c.Steps, c.BatchSize, c.N, c.Interactions, c.MaxNewTokens = 2, 2, 3, 2, 12
	}
	if o.Steps > 0 {
		c.Steps = o.Steps
	}
	if o.LR > 0 {
		c.LR = o.LR
	}
	if o.Loss != "" {
		c.Loss = o.Loss
	}
	return c.Effective()
}

// Run unpacks the default, evaluates the base model, aligns it, and evaluates the result.
func Run(ctx context.Context, o Options) (*Result, error) {
	dir := o.AssetsDir
	if dir == "" {
		dir = assets.DefaultDir()
	}
	if _, err := assets.Unpack(dir); err != nil {
		return nil, err
	}
	pairs, skipped, err := data.ReadHH(filepath.Join(dir, assets.HHFile))
	if err != nil {
		return nil, err
	}
	sp := data.Split(pairs)
	slog.Info("embedded default", "pairs", len(pairs), "skipped", skipped, "align_prompts", len(sp.Align), "test_pairs", len(sp.Test))
	// A finished demo in the same directory is replaced; an interrupted one is resumed.
	if _, err := os.Stat(filepath.Join(o.Out, "demo.json")); err == nil {
		if err := os.RemoveAll(o.Out); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	cfg := Config(o, dir)
	cfg.Prompts = filepath.Join(o.Out, "prompts.jsonl")
	if err := writePrompts(cfg.Prompts, data.Prompts(sp.Align)); err != nil {
		return nil, err
	}
	judgeDir := filepath.Join(dir, "models", "judge")
	if o.JudgeServer {
		url, stop, err := serveJudge(judgeDir)
		if err != nil {
			return nil, err
		}
		defer stop()
		cfg.Blackbox.URL, cfg.Blackbox.Model = url, "judge-rm"
		slog.Info("judge behind a loopback OpenAI-compatible server", "url", url)
	} else {
		cfg.Blackbox.RewardModel = judgeDir
	}
	be, err := model.NewBackend()
	if err != nil {
		return nil, err
	}
	evalRM, err := model.Load(be, filepath.Join(dir, "models", "evaluator"))
	if err != nil {
		return nil, err
	}
	base, err := model.Load(be, cfg.Model)
	if err != nil {
		return nil, err
	}
	nEval := 64
	if o.Small {
		nEval = 4
	}
	if o.EvalPrompts > 0 {
		nEval = o.EvalPrompts
	}
	test := sp.Test[:min(nEval, len(sp.Test))]
	eo := eval.Options{RewardModel: &blackbox.RewardModel{M: evalRM, Name: "evaluator"}, Prompts: data.Prompts(test),
		Pairs: test, MaxNewTokens: cfg.MaxNewTokens, Seed: o.Seed, Progress: o.Progress}
	slog.Info("evaluating the base model", "prompts", len(test))
	eo.Model = base
	before, err := eval.Run(ctx, eo)
	if err != nil {
		return nil, err
	}
	r, err := cycle.Prepare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	r.Progress = o.Progress
	if err := r.Run(ctx); err != nil {
		return nil, err
	}
	if err := r.Finish(); err != nil {
		return nil, err
	}
	slog.Info("evaluating the aligned model", "prompts", len(test))
	eo.Model, eo.Baseline = r.M, base
	after, err := eval.Run(ctx, eo)
	if err != nil {
		return nil, err
	}
	res := &Result{Base: before, Aligned: after, Run: o.Out, Table: eval.Table([]string{"base", "aligned"}, []*eval.Report{before, after})}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(o.Out, report.DemoFile), b, 0o644); err != nil {
		return nil, err
	}
	// The run's report, with the before/after table at its top.
	rep, err := report.Load(o.Out)
	if err != nil {
		return nil, err
	}
	return res, hf.WriteFileAtomic(filepath.Join(o.Out, "report.html"), func(w io.Writer) error {
		_, err := io.WriteString(w, rep.HTML())
		return err
	})
}

func writePrompts(path string, prompts []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, p := range prompts {
		if err := enc.Encode(map[string]string{"prompt": p}); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// serveJudge starts the judge reward model behind a loopback chat-completions server.
func serveJudge(dir string) (url string, stop func(), err error) {
	be, err := model.NewBackend()
	if err != nil {
		return "", nil, err
	}
	m, err := model.Load(be, dir)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: blackbox.JudgeHandler(&blackbox.RewardModel{M: m, Name: dir}, "judge-rm")}
	go srv.Serve(ln)
	return fmt.Sprintf("http://%s/v1", ln.Addr()), func() { srv.Close() }, nil
}
