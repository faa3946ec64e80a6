// Package bench measures the white-box engine's throughput (scoring, cached and uncached
// generation) on a randomly initialised LLaMA-architecture model, all in one run so the ratios
// compare like with like.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
)

// Options size the benchmark.
type Options struct {
	Hidden, Layers, Heads, KVHeads, Intermediate, Vocab int
	Batch                                               int // rows for scoring and generation
	ScoreLen                                            int // tokens per scored sequence
	PromptLen                                           int // prompt tokens before generation
	NewTokens                                           int // generated tokens per row
	Seed                                                uint64
}

// Defaults is the ~10M-parameter model of the engine issue: hidden 256, 8 layers, vocab 8k.
func Defaults() Options {
	return Options{Hidden: 256, Layers: 8, Heads: 8, KVHeads: 4, Intermediate: 688, Vocab: 8192,
		Batch: 16, ScoreLen: 128, PromptLen: 16, NewTokens: 128, Seed: 1}
}

// Result holds the measured numbers.
type Result struct {
	Backend           string  `json:"backend"`
	GOMAXPROCS        int     `json:"gomaxprocs"`
	Params            int     `json:"params"`
	Batch             int     `json:"batch"`
	ScoreTokensPerSec float64 `json:"score_tokens_per_s"`
	GenCachedPerSec   float64 `json:"generate_cached_tokens_per_s"`
	GenNoCachePerSec  float64 `json:"generate_nocache_tokens_per_s"`
	CacheSpeedup      float64 `json:"cache_speedup"`
	NewTokens         int     `json:"new_tokens"`
}

// RandomModel builds a random-init LLaMA model of the given size.
func RandomModel(b backends.Backend, o Options) (*model.Model, error) {
	raw := map[string]any{"model_type": "llama", "architectures": []string{"LlamaForCausalLM"},
		"vocab_size": o.Vocab, "hidden_size": o.Hidden, "intermediate_size": o.Intermediate,
		"num_hidden_layers": o.Layers, "num_attention_heads": o.Heads, "num_key_value_heads": o.KVHeads,
		"max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
		"tie_word_embeddings": false, "hidden_act": "silu", "dtype": "float32"}
	js, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(js)
	if err != nil {
		return nil, err
	}
	ts, err := model.InitTensors(cfg, 0.02, o.Seed)
	if err != nil {
		return nil, err
	}
	return model.New(b, cfg, nil, ts, "random init")
}

// Run measures scoring, then generation with and without the KV cache.
func Run(ctx context.Context, b backends.Backend, o Options, logf func(string, ...any)) (*Result, error) {
	m, err := RandomModel(b, o)
	if err != nil {
		return nil, err
	}
	res := &Result{Backend: b.Name(), GOMAXPROCS: runtime.GOMAXPROCS(0), Batch: o.Batch, NewTokens: o.NewTokens}
	for _, n := range m.TensorNames() {
		res.Params += m.Variable(n).Shape().Size()
	}
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
	if _, err := m.LogProbs(ctx, seqs); err != nil { // warm-up: builds the graph
		return nil, err
	}
	reps := 3
	start := time.Now()
	for i := 0; i < reps; i++ {
		if _, err := m.LogProbs(ctx, seqs); err != nil {
			return nil, err
		}
	}
	res.ScoreTokensPerSec = float64(reps*o.Batch*o.ScoreLen) / time.Since(start).Seconds()
	logf("scoring: %.0f tokens/s", res.ScoreTokensPerSec)

	prompts := randSeqs(o.Batch, o.PromptLen)
	d, err := m.NewDecoder(prompts, o.NewTokens, true)
	if err != nil {
		return nil, err
	}
	logits, err := d.Start()
	if err != nil {
		return nil, err
	}
	greedy := generate.Options{Greedy: true}
	next := make([]int, o.Batch)
	step := func() error {
		for r := range next {
			next[r] = generate.Sample(logits[r], nil, greedy)
		}
		logits, err = d.Step(next)
		return err
	}
	if err := step(); err != nil { // warm-up: builds the decode graph
		return nil, err
	}
	t0 := time.Now()
	steps := o.NewTokens - 2
	for s := 0; s < steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := step(); err != nil {
			return nil, err
		}
	}
	res.GenCachedPerSec = float64(steps*o.Batch) / time.Since(t0).Seconds()
	logf("generation with KV cache: %.0f tokens/s", res.GenCachedPerSec)

	// Without a cache, step t costs one forward pass over the prompt and the t tokens so far,
	// in windows of 16 slots. Each window size is timed once and weighted by the number of
	// steps that use it, which sums to the time of the full uncached generation.
	total := 0.0
	uses := map[int]int{}
	for s := 0; s < o.NewTokens; s++ {
		uses[(o.PromptLen+s+15)/16*16]++
	}
	for w, n := range uses {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rd, err := m.NewDecoder(randSeqs(o.Batch, w), 1, false)
		if err != nil {
			return nil, err
		}
		if _, err := rd.Start(); err != nil { // warm-up for this window size
			return nil, err
		}
		t0 := time.Now()
		if _, err := rd.Start(); err != nil {
			return nil, err
		}
		total += time.Since(t0).Seconds() * float64(n)
	}
	res.GenNoCachePerSec = float64(o.NewTokens*o.Batch) / total
	logf("generation recomputing the prefix: %.0f tokens/s", res.GenNoCachePerSec)
	res.CacheSpeedup = res.GenCachedPerSec / res.GenNoCachePerSec
	return res, nil
}

// String renders a result as a small table.
func (r *Result) String() string {
	return fmt.Sprintf("backend %s, GOMAXPROCS %d, %.2fM parameters, batch %d\n"+
		"scoring                      %10.0f tokens/s\n"+
		"generation, KV cache         %10.0f tokens/s\n"+
		"generation, no cache         %10.1f tokens/s\n"+
		"KV cache speed-up (%d tokens) %9.1fx\n",
		r.Backend, r.GOMAXPROCS, float64(r.Params)/1e6, r.Batch, r.ScoreTokensPerSec,
		r.GenCachedPerSec, r.GenNoCachePerSec, r.NewTokens, r.CacheSpeedup)
}
