package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/train"
)

type trainOptions struct {
	Model, Data, Loss, Out string
	SFTNorm                string
	PROTemp                bool
	SFTWeight              float64
	MaxResponseTokens      int
	WarmupRatio            float64
	LoRA                   model.LoRA
	Opt                    train.Optimizer
	Run                    train.RunOptions
	Quiet                  bool
	GradientCheckpointing  bool
	SaveDType              string
	End                    string
}

func (o *trainOptions) AddFlags(f *pflag.FlagSet) {
	o.Opt = train.DefaultOptimizer()
	d := o.Opt
	f.StringVar(&o.Model, "model", "", "HF model directory to start from")
	f.StringVar(&o.Data, "data", "", `ranked JSONL: {"prompt", "candidates": [best, ...]} or {"query", "responses", "scores"}`)
	f.StringVar(&o.Loss, "loss", "pro", "objective: pro, rrhf, sft, or bt (Bradley–Terry, for a reward model on [chosen, rejected] pairs)")
	o.SFTWeight = -1
	sftWeightFlag(f, &o.SFTWeight)
	lossFlags(f, &o.SFTNorm, &o.PROTemp)
	f.StringVar(&o.Out, "out", "", "run directory: final model, checkpoints/, metrics.jsonl (resumes if it holds a checkpoint)")
	f.Float64Var(&o.Opt.LR, "lr", d.LR, "peak learning rate")
	f.Float64Var(&o.Opt.WeightDecay, "weight-decay", d.WeightDecay, "AdamW decoupled weight decay (not on norms and biases)")
	f.Float64Var(&o.Opt.ClipNorm, "clip", d.ClipNorm, "clip gradients to this global norm (0: off)")
	f.Float64Var(&o.WarmupRatio, "warmup-ratio", 0.1, "fraction of steps of linear warm-up before cosine decay")
	f.IntVar(&o.Run.Epochs, "epochs", 1, "passes over the data")
	f.IntVar(&o.Run.MaxSteps, "max-steps", 0, "stop after this many optimiser steps (0: epochs decide)")
	f.IntVar(&o.Run.BatchSize, "batch-size", 4, "prompts per optimiser step")
	f.IntVar(&o.Run.GradAccum, "grad-accum", 1, "micro-batches the batch is split into")
	f.BoolVar(&o.GradientCheckpointing, "gradient-checkpointing", false, "run each layer again in the backward pass instead of keeping its activations: the same update, less memory, more time")
	f.Uint64Var(&o.Run.Seed, "seed", 0, "data-order seed")
	f.IntVar(&o.Run.SaveEvery, "save-every", 50, "checkpoint every N steps")
	f.IntVar(&o.Run.Keep, "keep", 2, "checkpoints to keep")
	f.IntVar(&o.MaxResponseTokens, "max-response-tokens", 256, "truncate candidates to this many tokens")
	responseEndFlag(f, &o.End)
	f.BoolVar(&o.Quiet, "quiet", false, "no progress bar")
	f.StringVar(&o.SaveDType, "save-dtype", "", "dtype of the saved model: float32, bfloat16 or float16 (default: as the model was loaded)")
	f.IntVar(&o.LoRA.R, "lora-r", 0, "LoRA rank (0: full fine-tuning)")
	f.Float64Var(&o.LoRA.Alpha, "lora-alpha", 16, "LoRA alpha (scale alpha/r)")
	f.Float64Var(&o.LoRA.Dropout, "lora-dropout", 0.05, "dropout on LoRA inputs")
	f.StringSliceVar(&o.LoRA.Targets, "lora-targets", []string{"q", "k", "v", "o"}, "modules to adapt: q,k,v,o,gate,up,down")
}

func newTrainCmd(g *globalOptions) *cobra.Command {
	o := &trainOptions{}
	cmd := &cobra.Command{
		Use:   "train --model DIR --data ranked.jsonl --loss pro|rrhf|sft --out DIR",
		Short: "Train on ranked candidates offline (the RRHF/PRO baselines)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runTrain(cmd, g, o) },
	}
	o.AddFlags(cmd.Flags())
	return required(cmd, "model", "data", "out")
}

func runTrain(cmd *cobra.Command, g *globalOptions, o *trainOptions) error {
	if err := model.CheckSaveDType(o.SaveDType); err != nil {
		return fmt.Errorf("--save-dtype: %w", err)
	}
	loss, err := train.NewLoss(o.Loss, o.SFTWeight, o.SFTNorm, o.PROTemp)
	if err != nil {
		return err
	}
	ranked, err := train.ReadRanked(o.Data)
	if err != nil {
		return err
	}
	m, err := loadModel(o.Model)
	if err != nil {
		return err
	}
	m.Recompute = o.GradientCheckpointing
	if err := loss.Fits(m); err != nil {
		return err
	}
	if o.LoRA.R != 0 {
		// A negative rank reaches AddLoRA, which refuses it. Same seed every time, so a resumed
		// run re-creates the adapters its checkpoint fills.
		if err := m.AddLoRA(o.LoRA, o.Run.Seed); err != nil {
			return err
		}
	}
	end, err := responseEnd(o.End, loss, m)
	if err != nil {
		return err
	}
	if ranked[0].Conversation != nil && m.Chat == nil {
		return fmt.Errorf("%s holds conversations, but %s has no chat template", o.Data, o.Model)
	}
	data, err := train.TokenizeFitted(m, ranked, o.MaxResponseTokens, end)
	if err != nil {
		return err
	}
	opt := o.Opt.Schedule(o.Run.TotalSteps(len(data)), o.WarmupRatio)
	ro := o.Run
	ro.Out = o.Out
	if !o.Quiet && !g.JSON {
		ro.Progress = os.Stderr
	}
	tr := train.NewTrainer(m, loss, opt)
	tr.DropoutSeed = o.Run.Seed
	slog.Info("training", "examples", len(data), "steps", opt.TotalSteps, "params", tr.NumParams(), "loss", loss.Kind, "sft_weight", loss.SFTWeight)
	metrics, err := train.Run(cmd.Context(), tr, data, ro)
	if err != nil && cmd.Context().Err() != nil {
		// Run saves a checkpoint at the last completed step when it is cancelled.
		return fmt.Errorf("interrupted; step %d of %d is saved in %s: run the same command again to resume",
			tr.Step, opt.TotalSteps, filepath.Join(o.Out, "checkpoints"))
	}
	if err != nil {
		return err
	}
	if m.HasLoRA() {
		if err := m.SaveAdapter(filepath.Join(o.Out, "adapter")); err != nil {
			return err
		}
		if err := m.MergeLoRA(); err != nil {
			return err
		}
	}
	if err := m.SaveAs(o.Out, o.SaveDType); err != nil {
		return err
	}
	slog.Info("saved", "model", o.Out, "metrics", filepath.Join(o.Out, "metrics.jsonl"))
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), map[string]any{"out": o.Out, "steps": tr.Step, "metrics": metrics})
	}
	return nil
}

type lossOptions struct {
	Model, Ranked, Loss string
	SFTWeight           float64
	SFTNorm             string
	PROTemp             bool
	End                 string
}

func newLossCmd(g *globalOptions) *cobra.Command {
	o := &lossOptions{}
	cmd := &cobra.Command{
		Use:   "loss --model DIR --ranked FILE.jsonl --loss rrhf|pro [--sft-weight W]",
		Short: "Loss and gradient norm of a ranked file as one batch, without updating anything",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runLoss(cmd, g, o) },
	}
	cmd.Flags().StringVar(&o.Model, "model", "", "HF model directory")
	cmd.Flags().StringVar(&o.Ranked, "ranked", "", "ranked JSONL file")
	cmd.Flags().StringVar(&o.Loss, "loss", "pro", "rrhf, pro, sft, or bt (Bradley–Terry on [chosen, rejected])")
	o.SFTWeight = -1
	sftWeightFlag(cmd.Flags(), &o.SFTWeight)
	lossFlags(cmd.Flags(), &o.SFTNorm, &o.PROTemp)
	responseEndFlag(cmd.Flags(), &o.End)
	return required(cmd, "model", "ranked")
}

func runLoss(cmd *cobra.Command, g *globalOptions, o *lossOptions) error {
	loss, err := train.NewLoss(o.Loss, o.SFTWeight, o.SFTNorm, o.PROTemp)
	if err != nil {
		return err
	}
	ranked, err := train.ReadRanked(o.Ranked)
	if err != nil {
		return err
	}
	m, err := loadModel(o.Model)
	if err != nil {
		return err
	}
	end, err := responseEnd(o.End, loss, m)
	if err != nil {
		return err
	}
	rep, err := train.Diagnose(cmd.Context(), m, loss, ranked, end)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), rep)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "loss %.6f  grad norm %.6f  (%d prompts)\n", rep.Loss, rep.GradNorm, len(rep.PerPrompt))
	return nil
}
