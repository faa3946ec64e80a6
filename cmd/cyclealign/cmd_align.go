package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/cycle"
)

type alignOptions struct {
	ConfigFile, Resume string
	DryRun, Quiet      bool
	Cfg                cycle.Config
}

func (o *alignOptions) AddFlags(f *pflag.FlagSet) {
	c := &o.Cfg
	*c = cycle.Defaults()
	f.StringVar(&o.ConfigFile, "config", "", "YAML configuration (flags given override it)")
	f.StringVar(&o.Resume, "resume", "", "continue the run in this directory from its last completed step")
	f.BoolVar(&o.DryRun, "dry-run", false, "print the plan (prompts, requests, tokens, cost) and exit")
	f.BoolVar(&o.Quiet, "quiet", false, "no progress display: one log line per step")
	f.StringVar((*string)(&c.Method), "method", string(c.Method), "cyclealign, or a baseline: static-icl (the paper's: T=1), static-icl-matched (T interactions, no dynamic demonstrations), no-agreement, sft-best")
	f.StringVar(&c.Model, "model", "", "white-box HF model directory")
	f.StringVar(&c.Prompts, "prompts", "", `JSONL prompts ({"prompt": ...} or HH-RLHF rows)`)
	f.StringVar(&c.Out, "out", "", "run directory")
	f.Uint64Var(&c.Seed, "seed", 0, "seed of prompt order, sampling and candidate order")
	f.IntVar(&c.Steps, "steps", c.Steps, "steps (batches of prompts)")
	f.IntVar(&c.BatchSize, "batch-size", c.BatchSize, "prompts per step")
	f.IntVar(&c.GradAccum, "grad-accum", c.GradAccum, "micro-batches a step's training is split into: the same update, less memory")
	f.BoolVar(&c.GradientCheckpointing, "gradient-checkpointing", c.GradientCheckpointing, "run each layer again in the backward pass instead of keeping its activations: the same update, less memory, more time")
	f.IntVarP(&c.N, "n", "n", c.N, "candidates per prompt")
	f.Float64Var(&c.Temperature, "temperature", c.Temperature, "sampling temperature")
	f.Float64Var(&c.TopP, "top-p", c.TopP, "nucleus sampling mass")
	f.IntVar(&c.MaxNewTokens, "max-new-tokens", c.MaxNewTokens, "tokens per candidate at most")
	f.IntVar(&c.Interactions, "interactions", c.Interactions, "T: interactions per step")
	f.IntVar(&c.Tau, "tau", 0, "agreement threshold |A| >= tau (0: n-1)")
	f.IntVar(&c.PoolSize, "pool-size", c.PoolSize, "P: dynamic demonstrations kept")
	f.StringVar(&c.StaticDemos, "static-demos", "", "JSON file of static demonstrations (default: shipped)")
	f.IntVar(&c.NumStatic, "num-static", c.NumStatic, "static demonstrations per request")
	f.IntVar(&c.NumDynamic, "num-dynamic", c.NumDynamic, "dynamic demonstrations per request at most")
	f.StringVar(&c.DemoSelect, "demo-select", c.DemoSelect, "recent or similar")
	f.StringVar(&c.Loss, "loss", c.Loss, "pro or rrhf")
	sftWeightFlag(f, &c.SFTWeight)
	lossFlags(f, &c.SFTNorm, &c.PROTemp)
	f.Float64Var(&c.LR, "lr", c.LR, "peak learning rate")
	f.Float64Var(&c.WeightDecay, "weight-decay", c.WeightDecay, "AdamW weight decay")
	f.Float64Var(&c.Clip, "clip", c.Clip, "gradient clipping norm")
	f.Float64Var(&c.WarmupRatio, "warmup-ratio", c.WarmupRatio, "warm-up fraction of optimiser steps")
	f.IntVar(&c.LoRAR, "lora-r", 0, "LoRA rank (0: full fine-tuning)")
	f.StringVar(&c.GenerateURL, "generate-url", "", "sample candidates from this OpenAI-compatible server (vLLM, SGLang, cyclealign serve; .../v1), kept on the current weights by LoRA hot-swap")
	f.StringVar(&c.GenerateModel, "generate-model", "", "the generation server's name of the base model")
	f.StringVar(&c.GenerateKeyEnv, "generate-api-key-env", "", "environment variable holding the generation server's bearer token")
	f.IntVar(&c.SaveEvery, "save-every", c.SaveEvery, "checkpoint every N steps")
	f.StringVar(&c.SaveDType, "save-dtype", "", "dtype of RUN_DIR/model: float32, bfloat16 or float16 (default: as the model was loaded)")
	f.IntVar(&c.EvalEvery, "eval-every", 0, "evaluate on held-out prompts every K steps (0: never)")
	f.StringVar(&c.EvalPrompts, "eval-prompts", "", "held-out HH-RLHF pairs or prompts for --eval-every")
	f.IntVar(&c.EvalN, "eval-n", c.EvalN, "how many held-out prompts")
	f.StringVar(&c.EvalReward, "eval-reward-model", "", "reward model scoring the held-out responses")
	addBlackboxFlags(f, &c.Blackbox)
}

func newAlignCmd(g *globalOptions) *cobra.Command {
	o := &alignOptions{}
	cmd := &cobra.Command{
		Use:   "align [--config FILE] --model DIR --prompts FILE --out RUN_DIR --blackbox-url URL --blackbox-model NAME | --resume RUN_DIR",
		Short: "Run CycleAlign: iterative distillation from a black-box ranker into the white-box model",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runAlign(cmd, g, o) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// resolveConfig layers defaults, the YAML file and the flags the user set.
func (o *alignOptions) resolveConfig(f *pflag.FlagSet) (cycle.Config, error) {
	if o.Resume != "" {
		if !cycle.HasRun(o.Resume) {
			return cycle.Config{}, fmt.Errorf("%s holds no run to resume (no %s)", o.Resume, cycle.ConfigFile)
		}
		return cycle.LoadRunConfig(o.Resume)
	}
	cfg := cycle.Defaults()
	if o.ConfigFile != "" {
		var err error
		if cfg, err = cycle.LoadConfig(o.ConfigFile); err != nil {
			return cfg, err
		}
	}
	// The flags given on the command line win over the file: note them, load the file into
	// the struct they are bound to, then set them again.
	given := map[string]string{}
	f.Visit(func(fl *pflag.Flag) { given[fl.Name] = fl.Value.String() })
	o.Cfg = cfg
	for name, v := range given {
		if err := f.Set(name, v); err != nil {
			return cfg, err
		}
	}
	cfg = o.Cfg.Effective()
	if cycle.HasRun(cfg.Out) {
		return cfg, fmt.Errorf("%s already holds a run: continue it with --resume %s, or choose another --out", cfg.Out, cfg.Out)
	}
	return cfg, nil
}

func runAlign(cmd *cobra.Command, g *globalOptions, o *alignOptions) error {
	cfg, err := o.resolveConfig(cmd.Flags())
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if o.DryRun {
		p, err := cycle.MakePlan(cfg)
		if err != nil {
			return err
		}
		if g.JSON {
			return printJSON(cmd.OutOrStdout(), p)
		}
		fmt.Fprint(cmd.OutOrStdout(), p.String())
		return nil
	}
	ctx := cmd.Context()
	r, err := cycle.Prepare(ctx, cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	slog.Info("aligning", "run", cfg.Out, "method", cfg.Method, "ranker", r.Ranker.Describe())
	if !o.Quiet && !g.JSON {
		r.Progress = os.Stderr
	}
	err = r.Run(ctx)
	switch {
	case errors.Is(err, blackbox.ErrBudget):
		return fmt.Errorf("%w; the last completed step is saved: raise --max-cost in %s and run cyclealign align --resume %s",
			err, filepath.Join(cfg.Out, cycle.ConfigFile), cfg.Out)
	case ctx.Err() != nil && r.Saved == 0:
		return fmt.Errorf("interrupted before the first step was saved; nothing to resume: run the same command again to start over")
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted; step %d of %d is saved: cyclealign align --resume %s", r.Saved, cfg.Steps, cfg.Out)
	case err != nil:
		return err
	}
	if err := r.Finish(); err != nil {
		return err
	}
	slog.Info("done", "model", filepath.Join(cfg.Out, "model"), "metrics", filepath.Join(cfg.Out, cycle.MetricsFile))
	return nil
}
