package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/cyclealign/cyclealign/internal/train"
)

// TrainOptions size the training benchmark.
type TrainOptions struct {
	Prompts    int // prompts per step
	Candidates int // candidates per prompt
	PromptLen  int
	ReplyLen   int
	Steps      int // timed steps (after one warm-up step)
}

// DefaultTrain is 2 prompts x 4 candidates of 16+48 tokens: 512 tokens a step.
func DefaultTrain() TrainOptions {
	return TrainOptions{Prompts: 2, Candidates: 4, PromptLen: 16, ReplyLen: 48, Steps: 3}
}

// TrainResult is one gradient implementation's training speed.
type TrainResult struct {
	Gradient     string  `json:"gradient"`
	TokensPerSec float64 `json:"tokens_per_s"`
	StepSeconds  float64 `json:"step_seconds"`
	PeakHeapMiB  float64 `json:"peak_heap_mib"`
}

// Train measures full fine-tuning with the PRO loss on the random-init model, with the fast
// (fast=true) or GoMLX's stock DotGeneral gradient.
func Train(ctx context.Context, b backends.Backend, o Options, to TrainOptions, fast bool) (*TrainResult, error) {
	train.SetFastGradients(fast)
	defer train.SetFastGradients(true)
	m, err := RandomModel(b, o)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 3))
	ids := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = 3 + rng.IntN(o.Vocab-3)
		}
		return out
	}
	var exs []train.Example
	for p := 0; p < to.Prompts; p++ {
		ex := train.Example{Prompt: ids(to.PromptLen)}
		for c := 0; c < to.Candidates; c++ {
			ex.Candidates = append(ex.Candidates, ids(to.ReplyLen))
		}
		exs = append(exs, ex)
	}
	opt := train.DefaultOptimizer()
	tr := train.NewTrainer(m, train.Loss{Kind: train.PRO, SFTWeight: 0.5}, opt)
	step := func() (int, error) {
		s, err := tr.Accumulate(ctx, exs)
		if err != nil {
			return 0, err
		}
		_, err = tr.Apply()
		return s.Tokens, err
	}
	runtime.GC()
	peak := newPeakSampler()
	if _, err := step(); err != nil { // warm-up: builds the graphs
		peak.stop()
		return nil, err
	}
	t0 := time.Now()
	tokens := 0
	for i := 0; i < to.Steps; i++ {
		n, err := step()
		if err != nil {
			peak.stop()
			return nil, err
		}
		tokens += n
	}
	el := time.Since(t0).Seconds()
	res := &TrainResult{Gradient: map[bool]string{true: "fast", false: "stock"}[fast],
		TokensPerSec: float64(tokens) / el, StepSeconds: el / float64(to.Steps), PeakHeapMiB: float64(peak.stop()) / (1 << 20)}
	return res, nil
}

// peakSampler records the largest Go heap in use while it runs.
type peakSampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	max  uint64
}

func newPeakSampler() *peakSampler {
	p := &peakSampler{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			p.max = max(p.max, ms.HeapInuse)
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peakSampler) stop() uint64 {
	close(p.done)
	p.wg.Wait()
	return p.max
}

// TrainTable renders training results side by side.
func TrainTable(rs []*TrainResult) string {
	s := fmt.Sprintf("%-8s %12s %10s %14s\n", "gradient", "tokens/s", "s/step", "peak heap MiB")
	for _, r := range rs {
		s += fmt.Sprintf("%-8s %12.1f %10.2f %14.0f\n", r.Gradient, r.TokensPerSec, r.StepSeconds, r.PeakHeapMiB)
	}
	return s
}
