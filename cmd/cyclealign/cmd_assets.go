package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
	"github.com/cyclealign/cyclealign/internal/train"
)

func newDataCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Prepare data sets"}
	var hh, out string
	split := &cobra.Command{
		Use:   "split --hh FILE --out DIR",
		Short: "Split an HH-RLHF file into base, judge, evaluator, align and test parts (fixed seed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pairs, skipped, err := data.ReadHH(hh)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			s := data.Split(pairs)
			parts := []struct {
				name  string
				pairs []data.Pair
			}{{"base", s.Base}, {"judge", s.Judge}, {"evaluator", s.Evaluator}, {"align", s.Align}, {"test", s.Test}}
			counts := map[string]int{"skipped_mismatched_prompts": skipped}
			for _, p := range parts {
				var b strings.Builder
				for _, x := range p.pairs {
					line, _ := json.Marshal(map[string]string{"chosen": x.Prompt + x.Chosen, "rejected": x.Prompt + x.Rejected})
					b.Write(append(line, '\n'))
				}
				if err := os.WriteFile(filepath.Join(out, p.name+".jsonl"), []byte(b.String()), 0o644); err != nil {
					return err
				}
				counts[p.name] = len(p.pairs)
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), counts)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-10s %6s  %s\n", "part", "pairs", "file")
			for _, p := range parts {
				fmt.Fprintf(w, "%-10s %6d  %s\n", p.name, len(p.pairs), filepath.Join(out, p.name+".jsonl"))
			}
			fmt.Fprintf(w, "%d rows skipped: their chosen and rejected prompts differ\n", skipped)
			return nil
		},
	}
	split.Flags().StringVar(&hh, "hh", "", "HH-RLHF .jsonl or .jsonl.gz")
	split.Flags().StringVar(&out, "out", "", "directory for base/judge/evaluator/align/test .jsonl")
	cmd.AddCommand(split)
	return cmd
}

// dialogues returns every chosen and rejected dialogue of HH files (plain text files give
// their lines).
func dialogues(files []string) ([]string, error) {
	var out []string
	for _, f := range files {
		if strings.Contains(f, ".jsonl") {
			pairs, _, err := data.ReadHH(f)
			if err != nil {
				return nil, err
			}
			for _, p := range pairs {
				out = append(out, p.Prompt+p.Chosen, p.Prompt+p.Rejected)
			}
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) != "" {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

func newTokenizerCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "tokenizer", Short: "Tokenizer tools"}
	o := tokenizer.TrainOptions{SpecialTokens: []string{"<|endoftext|>"}}
	var out string
	tr := &cobra.Command{
		Use:   "train --vocab-size V --out DIR FILES...",
		Short: "Learn a byte-level BPE tokenizer.json from HH-RLHF files or text files",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			texts, err := dialogues(files)
			if err != nil {
				return err
			}
			b, err := tokenizer.Train(texts, o)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			slog.Info("trained tokenizer", "texts", len(texts), "out", filepath.Join(out, "tokenizer.json"))
			return os.WriteFile(filepath.Join(out, "tokenizer.json"), b, 0o644)
		},
	}
	tr.Flags().IntVar(&o.VocabSize, "vocab-size", 2048, "vocabulary size, special tokens and bytes included")
	tr.Flags().StringVar(&out, "out", "", "output directory")
	cmd.AddCommand(tr)
	return cmd
}

// lmTrainOptions are the training flags pretrain and train-rm share.
type lmTrainOptions struct {
	Out, Data, EvalData string
	MaxLen              int
	LR                  float64
	WarmupRatio         float64
	Run                 train.RunOptions
}

func (o *lmTrainOptions) AddFlags(f *pflag.FlagSet, lr float64, unit string) {
	f.StringVar(&o.Data, "data", "", "HH-RLHF .jsonl(.gz)")
	f.StringVar(&o.Out, "out", "", "output model directory (checkpoints/ and metrics.jsonl inside; resumes)")
	f.IntVar(&o.MaxLen, "max-len", 256, "tokens per sequence at most")
	f.Float64Var(&o.LR, "lr", lr, "peak learning rate")
	f.Float64Var(&o.WarmupRatio, "warmup-ratio", 0.05, "warm-up fraction")
	f.IntVar(&o.Run.Epochs, "epochs", 1, "passes over the data")
	f.IntVar(&o.Run.MaxSteps, "max-steps", 0, "stop after this many steps (0: epochs decide)")
	f.IntVar(&o.Run.BatchSize, "batch-size", 16, unit+" per step")
	f.Uint64Var(&o.Run.Seed, "seed", 1, "seed of initialisation and data order")
	f.IntVar(&o.Run.SaveEvery, "save-every", 50, "checkpoint every N steps")
	o.Run.GradAccum, o.Run.Keep = 1, 1
}

func (o *lmTrainOptions) fit(ctx context.Context, m *model.Model, loss train.Loss, exs []train.Example) error {
	opt := train.DefaultOptimizer()
	opt.LR = o.LR
	opt.TotalSteps = o.Run.TotalSteps(len(exs))
	opt.WarmupSteps = int(o.WarmupRatio * float64(opt.TotalSteps))
	ro := o.Run
	ro.Out, ro.Progress = o.Out, os.Stderr
	tr := train.NewTrainer(m, loss, opt)
	slog.Info("training", "examples", len(exs), "steps", opt.TotalSteps, "params", tr.NumParams())
	_, err := train.Run(ctx, tr, exs, ro)
	return err
}

type pretrainOptions struct {
	lmTrainOptions
	Tokenizer                                          string
	Hidden, Layers, Heads, KVHeads, Intermediate, Seed int
}

func newPretrainCmd(g *globalOptions) *cobra.Command {
	o := &pretrainOptions{}
	cmd := &cobra.Command{
		Use:   "pretrain --tokenizer DIR --data FILE --out DIR",
		Short: "Train a small LLaMA-architecture model from scratch on dialogue text (chosen and rejected)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := tokenizer.Load(filepath.Join(o.Tokenizer, "tokenizer.json"))
			if err != nil {
				return err
			}
			raw := map[string]any{"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
				"vocab_size": tok.VocabSize(), "hidden_size": o.Hidden, "intermediate_size": o.Intermediate,
				"num_hidden_layers": o.Layers, "num_attention_heads": o.Heads, "num_key_value_heads": o.KVHeads,
				"max_position_embeddings": o.MaxLen, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
				"tie_word_embeddings": true, "hidden_act": "silu", "bos_token_id": 0, "eos_token_id": 0,
				"dtype": "bfloat16", "initializer_range": 0.02}
			b, _ := json.Marshal(raw)
			cfg, err := hf.ParseConfig(b)
			if err != nil {
				return err
			}
			ts, err := model.InitTensors(cfg, 0.02, o.Run.Seed)
			if err != nil {
				return err
			}
			be, err := model.NewBackend()
			if err != nil {
				return err
			}
			m, err := model.New(be, cfg, tok, ts, "init")
			if err != nil {
				return err
			}
			texts, err := dialogues([]string{o.Data})
			if err != nil {
				return err
			}
			bos := tok.Encode("", true)
			exs := make([]train.Example, len(texts))
			for i, t := range texts {
				exs[i] = train.Example{Prompt: bos, Candidates: [][]int{tok.Encode(t, false)}}.Fit(o.MaxLen)
			}
			if err := o.fit(cmd.Context(), m, train.Loss{Kind: train.SFT}, exs); err != nil {
				return err
			}
			return m.Save(o.Out)
		},
	}
	o.AddFlags(cmd.Flags(), 3e-3, "sequences")
	f := cmd.Flags()
	f.StringVar(&o.Tokenizer, "tokenizer", "", "directory with tokenizer.json")
	f.IntVar(&o.Hidden, "hidden", 128, "hidden size")
	f.IntVar(&o.Layers, "layers", 4, "layers")
	f.IntVar(&o.Heads, "heads", 4, "attention heads")
	f.IntVar(&o.KVHeads, "kv-heads", 2, "key/value heads")
	f.IntVar(&o.Intermediate, "intermediate", 352, "MLP size")
	return cmd
}

type trainRMOptions struct {
	lmTrainOptions
	Base string
}

func newTrainRMCmd(g *globalOptions) *cobra.Command {
	o := &trainRMOptions{}
	cmd := &cobra.Command{
		Use:   "train-rm --base DIR --data PAIRS --eval-data PAIRS --out DIR",
		Short: "Train a Bradley-Terry reward model (base body + scalar head) and report held-out pairwise accuracy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := loadModel(o.Base)
			if err != nil {
				return err
			}
			rm, err := base.WithRewardHead(o.Run.Seed)
			if err != nil {
				return err
			}
			pairs := func(path string) ([]train.Example, error) {
				ps, _, err := data.ReadHH(path)
				if err != nil {
					return nil, err
				}
				out := make([]train.Example, len(ps))
				for i, p := range ps {
					out[i] = train.Example{Prompt: rm.Tokenizer.Encode(p.Prompt, true),
						Candidates: [][]int{rm.Tokenizer.Encode(p.Chosen, false), rm.Tokenizer.Encode(p.Rejected, false)}}.Fit(o.MaxLen)
				}
				return out, nil
			}
			exs, err := pairs(o.Data)
			if err != nil {
				return err
			}
			loss := train.Loss{Kind: train.BT}
			if err := o.fit(cmd.Context(), rm, loss, exs); err != nil {
				return err
			}
			if err := rm.Save(o.Out); err != nil {
				return err
			}
			report := map[string]any{"train_pairs": len(exs)}
			for name, path := range map[string]string{"train": o.Data, "heldout": o.EvalData} {
				if path == "" {
					continue
				}
				ev, err := pairs(path)
				if err != nil {
					return err
				}
				acc, err := train.PairAccuracy(cmd.Context(), rm, ev)
				if err != nil {
					return err
				}
				report[name+"_accuracy"] = acc
				report[name+"_pairs"] = len(ev)
			}
			if err := train.WriteJSON(filepath.Join(o.Out, "rm_eval.json"), report); err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), report)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%v\n", report)
			return nil
		},
	}
	o.AddFlags(cmd.Flags(), 1e-3, "chosen/rejected pairs")
	cmd.Flags().StringVar(&o.Base, "base", "", "base model directory the reward model starts from")
	cmd.Flags().StringVar(&o.EvalData, "eval-data", "", "held-out HH-RLHF pairs for the accuracy report")
	return cmd
}
