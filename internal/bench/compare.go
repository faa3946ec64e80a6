package bench

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	cpuid "golang.org/x/sys/cpu"

	"github.com/cyclealign/cyclealign/internal/cpu"
	"github.com/gomlx/gomlx/backends"
)

//go:embed torchbench.py
var torchScript []byte

// Comparison is every engine's result on one model, measured in one run.
type Comparison struct {
	Model      Options        `json:"model"`
	LlamaCpp   *LlamaCppCheck `json:"llamacpp_check,omitempty"`
	PeakGFLOPS float64        `json:"fma_peak_gflops"` // measured register-only FMA ceiling, all threads
	Results    []*Result      `json:"results"`
}

// Child measures one engine in a fresh process (self bench --engine E --json ARGS), so that
// the peak RSS it reports is that engine's alone.
func Child(ctx context.Context, self, engine string, args []string) (*Result, error) {
	var r Result
	if err := runChild(ctx, self, append([]string{"bench", "--engine", engine, "--json"}, args...), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// runChild runs self with args and decodes the JSON it prints into v.
func runChild(ctx context.Context, self string, args []string, v any) error {
	cmd := exec.CommandContext(ctx, self, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: unreadable result %q: %w", strings.Join(args, " "), out, err)
	}
	return nil
}

// FindTorch returns a Python interpreter that imports torch: Debian's /usr/bin/python3 first
// (python3-torch belongs to it), then python3 on PATH.
func FindTorch(ctx context.Context) (string, error) {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.CommandContext(ctx, py, "-c", "import torch").Run() == nil {
			return py, nil
		}
	}
	return "", fmt.Errorf("--compare-torch: no python3 that imports torch (Debian: apt-get install python3-torch libopenblas0-pthread)")
}

// Torch runs the PyTorch twin (torchbench.py, embedded) with the same model and workloads,
// at the given number of threads.
func Torch(ctx context.Context, python string, o Options, to TrainOptions, threads int, withTrain bool) (*Result, error) {
	dir, err := os.MkdirTemp("", "cyclealign-torchbench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "torchbench.py")
	if err := os.WriteFile(script, torchScript, 0o644); err != nil {
		return nil, err
	}
	cfg, _ := json.Marshal(map[string]any{"hidden": o.Hidden, "layers": o.Layers, "heads": o.Heads, "kv_heads": o.KVHeads,
		"intermediate": o.Intermediate, "vocab": o.Vocab, "tied": o.Tied, "batch": o.Batch, "score_len": o.ScoreLen,
		"prompt_len": o.PromptLen, "new_tokens": o.NewTokens, "threads": threads, "train": withTrain,
		"train_prompts": to.Prompts, "train_candidates": to.Candidates, "train_prompt_len": to.PromptLen, "train_reply_len": to.ReplyLen})
	cmd := exec.CommandContext(ctx, python, script, string(cfg))
	core := openBLASCore()
	cmd.Env = append(os.Environ(), "OPENBLAS_CORETYPE="+core)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("torch benchmark: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var raw struct {
		Torch   string   `json:"torch"`
		Threads int      `json:"threads"`
		Params  int      `json:"params"`
		BLAS    []string `json:"blas"`
		Result
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("torch benchmark: unreadable result %q: %w", out, err)
	}
	r := raw.Result
	r.Engine, r.Threads, r.Params = "torch", raw.Threads, raw.Params
	blas := "no BLAS loaded"
	if len(raw.BLAS) > 0 {
		blas = filepath.Base(raw.BLAS[len(raw.BLAS)-1])
	}
	r.Detail = "torch " + raw.Torch + ", " + blas + " (core " + core + ")"
	return &r, nil
}

// openBLASCore is the OpenBLAS kernel family the baseline runs: the user's OPENBLAS_CORETYPE,
// else the widest this CPU supports. Debian's OpenBLAS 0.3.21 does not recognise every CPU
// (it takes an AMD Zen 5 for a Prescott and runs SSE3 kernels at a quarter of the speed),
// and a baseline held back that way would flatter cyclealign.
func openBLASCore() string {
	if c := os.Getenv("OPENBLAS_CORETYPE"); c != "" {
		return c
	}
	x := cpuid.X86
	switch {
	case x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasAVX512DQ && x.HasAVX512CD:
		return "SkylakeX"
	case x.HasAVX2 && x.HasFMA:
		return "Haswell"
	}
	return "Prescott"
}

// Baselines are the other programs a comparison runs on the same model.
type Baselines struct {
	Torch bool // the PyTorch twin
	// LlamaCppModules is a node_modules folder holding node-llama-cpp ("": llama.cpp not run).
	// llama.cpp runs at every thread count from 1 to GOMAXPROCS: its thread pool is created
	// for each decode step, and on a small machine fewer threads can be faster.
	LlamaCppModules string
}

// Compare measures each engine in a child process of self (args give the model and workload
// sizes), then the baselines asked for, then the machine's FMA ceiling.
func Compare(ctx context.Context, b backends.Backend, self string, o Options, to TrainOptions, engines []string, base Baselines, uncached bool, args []string) (*Comparison, error) {
	c := &Comparison{Model: o}
	for _, e := range engines {
		slog.Info("measuring", "engine", e)
		a := args
		if uncached && e == "gomlx" {
			a = append(a[:len(a):len(a)], "--uncached")
		}
		r, err := Child(ctx, self, e, a)
		if err != nil {
			return nil, err
		}
		c.Results = append(c.Results, r)
	}
	if base.Torch {
		py, err := FindTorch(ctx)
		if err != nil {
			return nil, err
		}
		slog.Info("measuring", "engine", "torch", "python", py)
		r, err := Torch(ctx, py, o, to, runtime.GOMAXPROCS(0), false)
		if err != nil {
			return nil, err
		}
		c.Results = append(c.Results, r)
	}
	if base.LlamaCppModules != "" {
		var threads []int
		for t := 1; t <= runtime.GOMAXPROCS(0); t++ {
			threads = append(threads, t)
		}
		rs, check, err := LlamaCpp(ctx, b, base.LlamaCppModules, o, threads)
		if err != nil {
			return nil, err
		}
		c.Results, c.LlamaCpp = append(c.Results, rs...), check
	}
	c.PeakGFLOPS = cpu.PeakGFLOPS(time.Second)
	return c, nil
}

// flopsPerToken is a forward pass's FLOPs for one token that attends to ctx positions: two per
// weight of every product (the embedding lookup is none) plus the attention's q·k and p·v.
func (o Options) flopsPerToken(ctx float64) float64 {
	hd := o.Hidden / o.Heads
	perLayer := o.Hidden*o.Hidden*2 + 2*o.Hidden*o.KVHeads*hd + 3*o.Hidden*o.Intermediate
	return 2*float64(o.Layers*perLayer+o.Vocab*o.Hidden) + 4*float64(o.Layers*o.Heads*hd)*ctx
}

// Table renders the comparison: tokens/s per workload and engine, the compute rate and its
// share of the FMA ceiling, and the ratios of the first engine to the others.
func (c *Comparison) Table() string {
	o := c.Model
	var b strings.Builder
	p := 0
	if len(c.Results) > 0 {
		p = c.Results[0].Params
	}
	fmt.Fprintf(&b, "model: LLaMA, %.1fM parameters in %s (hidden %d, %d layers, %d/%d heads, intermediate %d, vocab %d)\n",
		float64(p)/1e6, o.DType, o.Hidden, o.Layers, o.Heads, o.KVHeads, o.Intermediate, o.Vocab)
	for _, r := range c.Results {
		fmt.Fprintf(&b, "  %-6s %d threads, %s, peak RSS %.0f MiB, %d graphs built\n", r.Engine, r.Threads, r.Detail, r.PeakRSSMiB, r.Graphs)
	}
	if c.LlamaCpp != nil {
		fmt.Fprintf(&b, "  llama.cpp's log-probabilities of a %d-token check sequence are within %.1e of cpu's (limit %.0e)\n", c.LlamaCpp.Tokens, c.LlamaCpp.MaxAbsDiff, c.LlamaCpp.Limit)
	}
	if c.PeakGFLOPS > 0 {
		fmt.Fprintf(&b, "  float32 FMA ceiling measured on all threads: %.0f GFLOP/s\n", c.PeakGFLOPS)
	}
	type workload struct {
		name string
		ctx  float64
		get  func(*Result) float64
		mul  float64 // FLOPs per token relative to a forward pass
	}
	ws := []workload{
		{fmt.Sprintf("scoring %dx%d", o.Batch, o.ScoreLen), float64(o.ScoreLen) / 2, func(r *Result) float64 { return r.ScoreTokensPerSec }, 1},
		{fmt.Sprintf("generation, KV cache, batch %d", o.Batch), float64(o.PromptLen + o.NewTokens/2), func(r *Result) float64 { return r.GenTokensPerSec }, 1},
		{"generation, KV cache, batch 1", float64(o.PromptLen + o.NewTokens/2), func(r *Result) float64 { return r.Gen1TokensPerSec }, 1},
		{"  the same, inside the library", float64(o.PromptLen + o.NewTokens/2), func(r *Result) float64 { return r.Gen1InLibPerSec }, 1},
		{"generation, no cache", float64(o.PromptLen + o.NewTokens/2), func(r *Result) float64 { return r.GenNoCachePerSec }, 1},
		{"PRO training step", 32, func(r *Result) float64 { return r.TrainTokensPerSec }, 3},
	}
	// Columns are as wide as their headings, at least 10.
	width := func(h string) int { return max(10, len(h)) }
	fmt.Fprintf(&b, "%-34s", "tokens/s")
	for _, r := range c.Results {
		fmt.Fprintf(&b, " %*s", width(r.Engine), r.Engine)
	}
	if len(c.Results) > 0 {
		fmt.Fprintf(&b, " %16s", c.Results[0].Engine+" GFLOP/s")
		for _, r := range c.Results[1:] {
			fmt.Fprintf(&b, " %*s", width(c.Results[0].Engine+"/"+r.Engine), c.Results[0].Engine+"/"+r.Engine)
		}
	}
	b.WriteString("\n")
	for _, w := range ws {
		any := false
		for _, r := range c.Results {
			any = any || w.get(r) > 0
		}
		if !any {
			continue
		}
		fmt.Fprintf(&b, "%-34s", w.name)
		for _, r := range c.Results {
			if v := w.get(r); v > 0 {
				fmt.Fprintf(&b, " %*.1f", width(r.Engine), v)
			} else {
				fmt.Fprintf(&b, " %*s", width(r.Engine), "-")
			}
		}
		first := w.get(c.Results[0])
		gf := first * w.mul * o.flopsPerToken(w.ctx) / 1e9
		switch {
		case first > 0 && c.PeakGFLOPS > 0 && c.Results[0].CPU:
			fmt.Fprintf(&b, " %7.1f (%3.0f%%)", gf, 100*gf/c.PeakGFLOPS)
		case first > 0:
			fmt.Fprintf(&b, " %16.1f", gf)
		default:
			fmt.Fprintf(&b, " %16s", "-")
		}
		for _, r := range c.Results[1:] {
			wd := width(c.Results[0].Engine + "/" + r.Engine)
			if v := w.get(r); v > 0 && first > 0 {
				fmt.Fprintf(&b, " %*.2fx", wd-1, first/v)
			} else {
				fmt.Fprintf(&b, " %*s", wd, "-")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
