// Package bench measures the white-box engine's throughput (scoring, cached and uncached
// generation, training, serving) on randomly initialised LLaMA-architecture models, side by
// side with the previous engine and a PyTorch twin in one run, so the ratios compare like with
// like.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/cyclealign/cyclealign/internal/cpu"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
)

// Options size the benchmark.
type Options struct {
	Hidden, Layers, Heads, KVHeads, Intermediate, Vocab int
	Tied                                                bool // tie the LM head to the embeddings
	Batch                                               int  // rows for scoring and generation
	ScoreLen                                            int  // tokens per scored sequence
	PromptLen                                           int  // prompt tokens before generation
	NewTokens                                           int  // generated tokens per row
	Seed                                                uint64
	// DType is the weights' dtype as a checkpoint would store them: "float32", or "bfloat16"
	// (the engine keeps them so).
	DType string
}

// Defaults is the ~10M-parameter model of the engine issue: hidden 256, 8 layers, vocab 8k.
func Defaults() Options {
	return Options{Hidden: 256, Layers: 8, Heads: 8, KVHeads: 4, Intermediate: 688, Vocab: 8192,
		Batch: 16, ScoreLen: 128, PromptLen: 16, NewTokens: 128, Seed: 1, DType: "float32"}
}

// Args repeats the model and workload sizes as the bench command's flags, for a child process.
func (o Options) Args() []string {
	return []string{"--hidden", fmt.Sprint(o.Hidden), "--layers", fmt.Sprint(o.Layers), "--heads", fmt.Sprint(o.Heads),
		"--kv-heads", fmt.Sprint(o.KVHeads), "--intermediate", fmt.Sprint(o.Intermediate), "--vocab", fmt.Sprint(o.Vocab),
		"--tied=" + fmt.Sprint(o.Tied), "--batch", fmt.Sprint(o.Batch), "--new-tokens", fmt.Sprint(o.NewTokens),
		"--prompt-len", fmt.Sprint(o.PromptLen), "--score-len", fmt.Sprint(o.ScoreLen), "--dtype", o.DType}
}

// Size100M is a ~100M-parameter LLaMA (SmolLM-like widths, a 32k vocabulary, tied head).
func Size100M() Options {
	o := Defaults()
	o.Hidden, o.Layers, o.Heads, o.KVHeads, o.Intermediate, o.Vocab, o.Tied = 768, 12, 12, 4, 2048, 32000, true
	return o
}

// RandomModel builds a random-init LLaMA model of the given size.
func RandomModel(b backends.Backend, o Options) (*model.Model, error) {
	cfg, ts, err := randomCheckpoint(o)
	if err != nil {
		return nil, err
	}
	return model.New(b, cfg, nil, ts, "random init")
}

// SaveRandomModel writes the model RandomModel builds as a checkpoint (config.json,
// model.safetensors) in dir, for engines that load files.
func SaveRandomModel(dir string, o Options) error {
	cfg, ts, err := randomCheckpoint(o)
	if err != nil {
		return err
	}
	return saveCheckpoint(dir, cfg, ts)
}

func saveCheckpoint(dir string, cfg *hf.Config, ts map[string]*hf.Tensor) error {
	if err := hf.WriteConfig(dir, cfg); err != nil {
		return err
	}
	return hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"})
}

func randomCheckpoint(o Options) (*hf.Config, map[string]*hf.Tensor, error) {
	raw := map[string]any{"model_type": "llama", "architectures": []string{"LlamaForCausalLM"},
		"vocab_size": o.Vocab, "hidden_size": o.Hidden, "intermediate_size": o.Intermediate,
		"num_hidden_layers": o.Layers, "num_attention_heads": o.Heads, "num_key_value_heads": o.KVHeads,
		"max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
		"tie_word_embeddings": o.Tied, "hidden_act": "silu", "dtype": o.DType}
	js, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(js)
	if err != nil {
		return nil, nil, err
	}
	ts, err := model.InitTensors(cfg, 0.02, o.Seed)
	if err != nil {
		return nil, nil, err
	}
	return cfg, ts, nil
}

// Result is one engine's inference throughput on one model.
type Result struct {
	Engine            string  `json:"engine"` // cpu (own kernels), gomlx (graphs on simplego) or torch
	Detail            string  `json:"detail"` // kernel, or torch version and BLAS
	Threads           int     `json:"threads"`
	CPU               bool    `json:"cpu"`    // ran on this machine's CPU (its FMA ceiling applies)
	Graphs            int     `json:"graphs"` // graphs built (compiled, on XLA)
	Params            int     `json:"params"`
	ScoreTokensPerSec float64 `json:"score_tokens_per_s"`
	GenTokensPerSec   float64 `json:"generate_tokens_per_s"`        // KV cache, batch Options.Batch
	Gen1TokensPerSec  float64 `json:"generate_batch1_tokens_per_s"` // KV cache, batch 1
	// Gen1InLibPerSec is batch-1 decoding timed inside the engine's library: for llama.cpp its own
	// perf report (node-llama-cpp's JavaScript around each step left out); the Go engines' rate.
	Gen1InLibPerSec   float64 `json:"generate_batch1_in_library_tokens_per_s,omitempty"`
	TrainTokensPerSec float64 `json:"train_tokens_per_s,omitempty"` // PRO step (torch only; see Train)
	GenNoCachePerSec  float64 `json:"generate_nocache_tokens_per_s,omitempty"`
	PeakRSSMiB        float64 `json:"peak_rss_mib"`
}

// timeUntil calls fn until it ran at least minReps times and for at least minDur, and returns
// the calls per second. One untimed call comes first (it builds graphs, warms caches).
func timeUntil(minReps int, minDur time.Duration, fn func() error) (float64, error) {
	if err := fn(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	n := 0
	for n < minReps || time.Since(t0) < minDur {
		if err := fn(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// Run measures one engine ("cpu" or "gomlx") in this process: scoring, then greedy decoding
// with the KV cache at batch o.Batch and at batch 1, and, with uncached, decoding that
// recomputes the prefix at every step (the GoMLX graphs; the KV cache's baseline).
func Run(ctx context.Context, b backends.Backend, o Options, engine string, uncached bool, logf func(string, ...any)) (*Result, error) {
	m, err := RandomModel(b, o)
	if err != nil {
		return nil, err
	}
	if err := m.SetEngine(engine); err != nil {
		return nil, err
	}
	res := &Result{Engine: engine, Threads: runtime.GOMAXPROCS(0), Detail: "backend " + b.Name(), CPU: model.PureGo(b)}
	if engine == "cpu" {
		res.Detail = "kernel " + cpu.Kernel()
	}
	res.Params = m.NumParams()
	rng := rand.New(rand.NewPCG(o.Seed, 2))
	randSeqs := func(n, length int) [][]int {
		out := make([][]int, n)
		for i := range out {
			for j := 0; j < length; j++ {
				out[i] = append(out[i], 3+rng.IntN(o.Vocab-3))
			}
		}
		return out
	}
	seqs := randSeqs(o.Batch, o.ScoreLen)
	rate, err := timeUntil(2, 2*time.Second, func() error {
		_, err := m.LogProbs(ctx, seqs)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.ScoreTokensPerSec = rate * float64(o.Batch*o.ScoreLen)
	logf("%s scoring: %.0f tokens/s", engine, res.ScoreTokensPerSec)
	for _, rows := range []int{o.Batch, 1} {
		r, err := decodeRate(ctx, m, randSeqs(rows, o.PromptLen), o.NewTokens)
		if err != nil {
			return nil, err
		}
		if rows == 1 {
			res.Gen1TokensPerSec, res.Gen1InLibPerSec = r, r
		} else {
			res.GenTokensPerSec = r
		}
		logf("%s generation with KV cache, batch %d: %.0f tokens/s", engine, rows, r)
	}
	if uncached {
		if res.GenNoCachePerSec, err = noCacheRate(ctx, m, o, randSeqs); err != nil {
			return nil, err
		}
		logf("generation recomputing the prefix: %.1f tokens/s", res.GenNoCachePerSec)
	}
	res.PeakRSSMiB, res.Graphs = peakRSSMiB(), model.GraphsBuilt()
	return res, nil
}

// decodeRate times greedy decoding steps (the prefill and the first step excluded), as the
// PyTorch twin does, and returns generated tokens per second.
func decodeRate(ctx context.Context, m *model.Model, prompts [][]int, newTokens int) (float64, error) {
	d, err := m.NewDecoder(prompts, newTokens, true)
	if err != nil {
		return 0, err
	}
	logits, err := d.Start()
	if err != nil {
		return 0, err
	}
	greedy := generate.Options{Greedy: true}
	next := make([]int, len(prompts))
	step := func() error {
		for r := range next {
			next[r] = generate.Sample(logits[r], nil, greedy)
		}
		logits, err = d.Step(next)
		return err
	}
	if err := step(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	steps := newTokens - 2
	for s := 0; s < steps; s++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := step(); err != nil {
			return 0, err
		}
	}
	return float64(steps*len(prompts)) / time.Since(t0).Seconds(), nil
}

// noCacheRate is generation without a cache: step t costs one forward pass over the prompt
// and the t tokens so far, in windows of 16 slots. Each window size is timed once and weighted
// by the number of steps that use it, which sums to the time of the full uncached generation.
func noCacheRate(ctx context.Context, m *model.Model, o Options, randSeqs func(n, length int) [][]int) (float64, error) {
	total := 0.0
	uses := map[int]int{}
	for s := 0; s < o.NewTokens; s++ {
		uses[(o.PromptLen+s+15)/16*16]++
	}
	for w, n := range uses {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rd, err := m.NewDecoder(randSeqs(o.Batch, w), 1, false)
		if err != nil {
			return 0, err
		}
		if _, err := rd.Start(); err != nil { // warm-up for this window size
			return 0, err
		}
		t0 := time.Now()
		if _, err := rd.Start(); err != nil {
			return 0, err
		}
		total += time.Since(t0).Seconds() * float64(n)
	}
	return float64(o.NewTokens*o.Batch) / total, nil
}
