package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/demo"
	"github.com/cyclealign/cyclealign/internal/eval"
)

type evalOptions struct {
	Model, ModelURL, ModelName   string
	Data, RewardModel, Baseline  string
	JudgeURL, JudgeModel, KeyEnv string
	N, MaxNewTokens, NoRepeat    int
	Seed                         uint64
}

func newEvalCmd(g *globalOptions) *cobra.Command {
	o := &evalOptions{}
	cmd := &cobra.Command{
		Use:   "eval --model DIR --data FILE [--reward-model DIR] [--baseline DIR] [--judge-url URL --judge-model NAME] [--n K]",
		Short: "Evaluate a model on held-out prompts: reward, win rate, preference accuracy, BLEU, perplexity",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runEval(cmd, g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model to evaluate (a HF directory)")
	f.StringVar(&o.ModelURL, "model-url", "", "or evaluate a served model: its OpenAI-compatible API base (reward and win rate; pair metrics need --model)")
	f.StringVar(&o.ModelName, "model-name", "", "the served model's id")
	f.StringVar(&o.Data, "data", "", "held-out HH-RLHF pairs (all metrics) or JSONL prompts (reward and win rate)")
	f.StringVar(&o.RewardModel, "reward-model", "", "reward model for the mean reward (and the win-rate judge without --judge-url)")
	f.StringVar(&o.Baseline, "baseline", "", "baseline model for the win rate")
	f.StringVar(&o.JudgeURL, "judge-url", "", "OpenAI-compatible API base of a black-box judge for the win rate")
	f.StringVar(&o.JudgeModel, "judge-model", "", "judge model name")
	f.StringVar(&o.KeyEnv, "api-key-env", "OPENAI_API_KEY", "environment variable holding the judge's API key")
	f.IntVar(&o.N, "n", 0, "evaluate the first K prompts (0: all)")
	f.IntVar(&o.MaxNewTokens, "max-new-tokens", 128, "greedy response length at most")
	f.IntVar(&o.NoRepeat, "no-repeat-ngram", 0, "greedy decoding never repeats an n-gram of prompt and response (HF's no_repeat_ngram_size, except the turn's end; 0: plain greedy)")
	f.Uint64Var(&o.Seed, "seed", 0, "bootstrap seed")
	return required(cmd, "data")
}

func runEval(cmd *cobra.Command, g *globalOptions, o *evalOptions) error {
	switch {
	case o.N < 0:
		return fmt.Errorf("--n %d: must not be negative (0: all prompts)", o.N)
	case o.MaxNewTokens < 1:
		return fmt.Errorf("--max-new-tokens %d: must be at least 1", o.MaxNewTokens)
	case o.NoRepeat < 0:
		return fmt.Errorf("--no-repeat-ngram %d: must not be negative (0: plain greedy)", o.NoRepeat)
	}
	eo := eval.Options{MaxNewTokens: o.MaxNewTokens, NoRepeatNGram: o.NoRepeat, Seed: o.Seed}
	var err error
	if o.ModelURL != "" {
		key, _ := blackbox.ReadAPIKey(o.KeyEnv, "")
		eo.Remote = &eval.Remote{URL: o.ModelURL, Model: o.ModelName, APIKey: key}
	}
	if o.Model != "" || o.ModelURL == "" {
		if eo.Model, err = loadModel(o.Model); err != nil {
			return err
		}
	}
	if eo.Prompts, eo.Conversations, eo.Pairs, err = data.ReadEval(o.Data); err != nil {
		return err
	}
	if o.N > 0 {
		eo.Prompts = eo.Prompts[:min(o.N, len(eo.Prompts))]
		eo.Pairs = eo.Pairs[:min(o.N, len(eo.Pairs))]
		if eo.Conversations != nil {
			eo.Conversations = eo.Conversations[:len(eo.Prompts)]
		}
	}
	if o.RewardModel != "" {
		rm, err := loadModel(o.RewardModel)
		if err != nil {
			return err
		}
		eo.RewardModel = &blackbox.RewardModel{M: rm, Name: o.RewardModel}
	}
	if o.Baseline != "" {
		if eo.Baseline, err = loadModel(o.Baseline); err != nil {
			return err
		}
	}
	if o.JudgeURL != "" {
		bo := blackbox.DefaultOptions()
		bo.URL, bo.Model, bo.KeyEnv = o.JudgeURL, o.JudgeModel, o.KeyEnv
		if eo.Judge, err = bo.Build(0); err != nil {
			return err
		}
	}
	if !g.JSON {
		eo.Progress = os.Stderr
	}
	rep, err := eval.Run(cmd.Context(), eo)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), rep)
	}
	name := o.Model
	if o.ModelURL != "" {
		name = o.ModelURL
	}
	fmt.Fprint(cmd.OutOrStdout(), eval.Table([]string{name}, []*eval.Report{rep}))
	return nil
}

func newDemoCmd(g *globalOptions) *cobra.Command {
	o := demo.Options{}
	cmd := &cobra.Command{
		Use:   "demo [--small] [--judge-server] [--out DIR]",
		Short: "Run CycleAlign offline on the embedded default and print a before/after table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !g.JSON {
				o.Progress = os.Stderr
			}
			// --small has its own sizes, unless a size was given.
			for name, p := range map[string]*int{"steps": &o.Steps, "batch-size": &o.BatchSize, "eval-prompts": &o.EvalPrompts} {
				if o.Small && !cmd.Flags().Changed(name) {
					*p = 0
				}
			}
			res, err := demo.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "\nrun directory: %s\n\nbase vs aligned (evaluator: %s; win rate of aligned against base)\n%s", res.Run, res.Evaluator, res.Table)
			if res.Control != nil {
				fmt.Fprintf(w, "\nCycleAlign vs the matched control (same optimiser steps, no dynamic demonstrations)\n%s", res.Methods)
			}
			fmt.Fprintf(w, "\n%s\n%s", res.JudgeSummary, res.Verdict)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Out, "out", "runs/demo", "run directory")
	f.BoolVar(&o.Small, "small", false, "a reduced run (seconds per phase) that still goes through every phase")
	f.BoolVar(&o.JudgeServer, "judge-server", false, "put the judge behind a loopback OpenAI-compatible server and rank through the API client")
	f.BoolVar(&o.NoControl, "no-control", false, "skip the static-icl-matched control run")
	f.Float64Var(&o.DemoWeight, "demo-weight", blackbox.DefaultOptions().DemoWeight, "how far the judge's demonstrations move its scores")
	f.IntVar(&o.NoRepeatNGram, "no-repeat-ngram", 3, "evaluation's greedy decoding never repeats an n-gram of prompt and reply (HF's no_repeat_ngram_size, except the turn's end; -1: plain greedy)")
	f.IntVar(&o.Steps, "steps", 10, "alignment steps (--small: 2)")
	f.IntVar(&o.BatchSize, "batch-size", 4, "prompts a step (--small: 2)")
	f.IntVar(&o.EvalPrompts, "eval-prompts", 150, "held-out prompts evaluated, at most all 150 (--small: 4)")
	f.Uint64Var(&o.Seed, "seed", 0, "seed")
	f.Float64Var(&o.LR, "lr", 7e-5, "learning rate")
	f.StringVar(&o.Loss, "loss", "pro", "pro or rrhf")
	f.StringVar(&o.Model, "model", "", "align this base model (HF directory, same tokenizer family as the HH prompts) instead of the embedded one")
	f.StringVar(&o.AssetsDir, "assets", "", "where to unpack the embedded default (default: the user cache directory)")
	return cmd
}
