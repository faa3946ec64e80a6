package bench

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gomlx/gomlx/backends"

	"github.com/cyclealign/cyclealign/internal/model"
)

//go:embed llamacppbench.mjs
var llamacppScript []byte

// LlamaCppVersion is the node-llama-cpp release whose prebuilt llama.cpp libraries the
// comparison runs (scripts/llamacpp/package.json pins it).
const LlamaCppVersion = "3.21.1"

// LlamaCppCheck is how far llama.cpp's log-probabilities of one sequence are from the Go
// engine's on the same weights: a converter that mislaid a tensor would show here.
type LlamaCppCheck struct {
	Tokens     int     `json:"tokens"`
	MaxAbsDiff float64 `json:"max_abs_diff"`
	Limit      float64 `json:"limit"` // beyond it the comparison fails
}

// LlamaCpp measures llama.cpp on the benchmark model once for each thread count: it writes
// the checkpoint, converts it to GGUF in the model's dtype, and runs llamacppbench.mjs with
// node, importing node-llama-cpp from modules (a node_modules folder). Each run's check
// compares its log-probabilities with the Go engine's on b; the worst is returned.
func LlamaCpp(ctx context.Context, b backends.Backend, modules string, o Options, threads []int) ([]*Result, *LlamaCppCheck, error) {
	if _, err := os.Stat(filepath.Join(modules, "node-llama-cpp", "package.json")); err != nil {
		return nil, nil, fmt.Errorf("--compare-llamacpp: no node-llama-cpp under %s (run: cd scripts/llamacpp && npm ci --ignore-scripts)", modules)
	}
	dir, err := os.MkdirTemp("", "cyclealign-llamacpp")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	cfg, ts, err := randomCheckpoint(o)
	if err != nil {
		return nil, nil, err
	}
	ckpt := filepath.Join(dir, "model")
	if err := os.Mkdir(ckpt, 0o755); err != nil {
		return nil, nil, err
	}
	if err := saveCheckpoint(ckpt, cfg, ts); err != nil {
		return nil, nil, err
	}
	gguf := filepath.Join(dir, "model.gguf")
	if err := ConvertGGUF(ckpt, gguf); err != nil {
		return nil, nil, err
	}
	if err := os.RemoveAll(ckpt); err != nil {
		return nil, nil, err
	}
	m, err := model.New(b, cfg, nil, ts, "random init")
	if err != nil {
		return nil, nil, err
	}
	check := make([]int, 17)
	for i := range check {
		check[i] = 3 + (i*7919)%(o.Vocab-3)
	}
	want, err := m.LogProbs(ctx, [][]int{check})
	if err != nil {
		return nil, nil, err
	}
	params := m.NumParams()
	m, ts = nil, nil // the Go model's memory is not llama.cpp's to carry

	script := filepath.Join(dir, "llamacppbench.mjs")
	if err := os.WriteFile(script, llamacppScript, 0o644); err != nil {
		return nil, nil, err
	}
	abs, err := filepath.Abs(modules)
	if err != nil {
		return nil, nil, err
	}
	// In float32, llama.cpp's F16 KV cache puts it about 3e-4 away, and q and k rows left in
	// transformers' order about 2e-2. In bf16 both sides round activations to bf16 their own
	// way (about 1e-2 apart); the float32 run is the converter's check there.
	worst := &LlamaCppCheck{Tokens: len(want[0]), Limit: 5e-3}
	if o.DType == "bfloat16" {
		worst.Limit = 5e-2
	}
	var results []*Result
	for _, th := range threads {
		slog.Info("measuring", "engine", "llama.cpp", "threads", th)
		js, _ := json.Marshal(map[string]any{"modules": abs, "gguf": gguf, "version": LlamaCppVersion, "threads": th,
			"vocab": o.Vocab, "params": params, "batch": o.Batch, "score_len": o.ScoreLen, "prompt_len": o.PromptLen,
			"new_tokens": o.NewTokens, "context": max(o.ScoreLen, o.PromptLen+o.NewTokens) + 16, "check": check})
		cfgPath := filepath.Join(dir, "config.json")
		if err := os.WriteFile(cfgPath, js, 0o644); err != nil {
			return nil, nil, err
		}
		cmd := exec.CommandContext(ctx, "node", script, cfgPath)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, nil, fmt.Errorf("llama.cpp benchmark: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		var raw struct {
			Result
			Check []float64 `json:"check_logprobs"`
		}
		if err := json.Unmarshal(out, &raw); err != nil {
			return nil, nil, fmt.Errorf("llama.cpp benchmark: unreadable result %q: %w", out, err)
		}
		if len(raw.Check) != len(want[0]) {
			return nil, nil, fmt.Errorf("llama.cpp benchmark: %d log-probabilities for a %d-token check", len(raw.Check), len(check))
		}
		for i, lp := range raw.Check {
			worst.MaxAbsDiff = math.Max(worst.MaxAbsDiff, math.Abs(lp-float64(want[0][i])))
		}
		if worst.MaxAbsDiff > worst.Limit {
			return nil, nil, fmt.Errorf("llama.cpp benchmark: its log-probabilities are %.2g from cpu's on the same weights: the GGUF conversion is wrong", worst.MaxAbsDiff)
		}
		raw.Result.Engine = fmt.Sprintf("llamacpp-%dt", th)
		results = append(results, &raw.Result)
	}
	return results, worst, nil
}
