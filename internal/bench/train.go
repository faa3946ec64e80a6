package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/cyclealign/cyclealign/internal/model"
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

// TrainResult is one engine's training speed.
type TrainResult struct {
	Engine       string  `json:"engine"` // cpu (own kernels), gomlx (graphs, replacement gradient), gomlx-stock, torch
	TokensPerSec float64 `json:"tokens_per_s"`
	StepSeconds  float64 `json:"step_seconds"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	Graphs       int     `json:"graphs"` // graphs built (compiled, on XLA)
}

// TrainEngines are the engines Train measures.
var TrainEngines = []string{"cpu", "gomlx", "gomlx-stock"}

// Train measures full fine-tuning with the PRO loss on the random-init model on one engine:
// the own CPU path (cpu), the GoMLX graphs with cyclealign's DotGeneral gradient (gomlx) or
// with GoMLX's stock one (gomlx-stock). Run each in a process of its own for its peak RSS.
func Train(ctx context.Context, b backends.Backend, o Options, to TrainOptions, engine string) (*TrainResult, error) {
	graphEngine := "gomlx"
	switch engine {
	case "cpu":
		graphEngine = "cpu"
	case "gomlx":
	case "gomlx-stock":
		model.SetFastGradients(false)
		defer model.SetFastGradients(true)
	default:
		return nil, fmt.Errorf("unknown training engine %q (%s)", engine, strings.Join(TrainEngines, ", "))
	}
	m, err := RandomModel(b, o)
	if err != nil {
		return nil, err
	}
	if err := m.SetEngine(graphEngine); err != nil {
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
	if _, err := step(); err != nil { // warm-up: builds the graphs
		return nil, err
	}
	t0 := time.Now()
	tokens := 0
	for i := 0; i < to.Steps; i++ {
		n, err := step()
		if err != nil {
			return nil, err
		}
		tokens += n
	}
	el := time.Since(t0).Seconds()
	return &TrainResult{Engine: engine, TokensPerSec: float64(tokens) / el, StepSeconds: el / float64(to.Steps), PeakRSSMiB: peakRSSMiB(), Graphs: model.GraphsBuilt()}, nil
}

// TrainTable renders training results side by side, with the first engine's ratio to each.
func TrainTable(rs []*TrainResult) string {
	s := fmt.Sprintf("%-12s %12s %10s %14s %7s %10s\n", "engine", "tokens/s", "s/step", "peak RSS MiB", "graphs", "ratio")
	for _, r := range rs {
		s += fmt.Sprintf("%-12s %12.1f %10.2f %14.0f %7d %9.2fx\n", r.Engine, r.TokensPerSec, r.StepSeconds, r.PeakRSSMiB, r.Graphs, rs[0].TokensPerSec/r.TokensPerSec)
	}
	return s
}

// TrainChild measures one training engine in a fresh process (self bench --train --engine E).
func TrainChild(ctx context.Context, self, engine string, args []string) (*TrainResult, error) {
	var r TrainResult
	if err := runChild(ctx, self, append([]string{"bench", "--train", "--engine", engine, "--json"}, args...), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// CompareTraining measures a training step on each engine, each in a child process of self (a
// cyclealign binary) so that one engine's memory does not count against another's, and with the
// PyTorch twin when withTorch.
func CompareTraining(ctx context.Context, self string, o Options, to TrainOptions, engines []string, withTorch bool) ([]*TrainResult, error) {
	var rs []*TrainResult
	for _, e := range engines {
		slog.Info("measuring training", "engine", e)
		r, err := TrainChild(ctx, self, e, append(o.Args(), "--train-steps", fmt.Sprint(to.Steps), "--reply-len", fmt.Sprint(to.ReplyLen)))
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	if withTorch {
		py, err := FindTorch(ctx)
		if err != nil {
			return nil, err
		}
		slog.Info("measuring training", "engine", "torch", "python", py)
		tr, err := Torch(ctx, py, o, to, runtime.GOMAXPROCS(0), true)
		if err != nil {
			return nil, err
		}
		rs = append(rs, &TrainResult{Engine: "torch", TokensPerSec: tr.TrainTokensPerSec,
			StepSeconds: float64(to.Prompts*to.Candidates*(to.PromptLen+to.ReplyLen)) / tr.TrainTokensPerSec, PeakRSSMiB: tr.PeakRSSMiB})
	}
	return rs, nil
}
