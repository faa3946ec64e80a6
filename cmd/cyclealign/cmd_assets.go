package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/pipeline"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
)

// The commands that build the embedded default (scripts/make-assets.sh); the work is done by
// internal/pipeline.

func newDataCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Prepare data sets"}
	var hh, out string
	split := &cobra.Command{
		Use:   "split --hh FILE --out DIR",
		Short: "Split an HH-RLHF file into base, judge, evaluator, align and test parts (fixed seed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			parts, skipped, err := pipeline.Split(hh, out)
			if err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"parts": parts, "skipped_mismatched_prompts": skipped})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-10s %6s  %s\n", "part", "pairs", "file")
			for _, p := range parts {
				fmt.Fprintf(w, "%-10s %6d  %s\n", p.Name, p.Pairs, p.File)
			}
			fmt.Fprintf(w, "%d rows skipped: their chosen and rejected prompts differ\n", skipped)
			return nil
		},
	}
	split.Flags().StringVar(&hh, "hh", "", "HH-RLHF .jsonl or .jsonl.gz")
	split.Flags().StringVar(&out, "out", "", "directory for base/judge/evaluator/align/test .jsonl")
	cmd.AddCommand(required(split, "hh", "out"))
	var co pipeline.CorpusOptions
	var corpusOut string
	corpus := &cobra.Command{
		Use:   "corpus --out FILE [--hh FILES] [--wordnet DIR] [--fortunes DIR]",
		Short: "Write a shuffled pre-training corpus ({\"text\"} JSONL) from HH dialogues, WordNet glosses and fortunes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stats, err := pipeline.Corpus(corpusOut, co)
			if err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), stats)
			}
			for _, s := range stats {
				fmt.Fprintf(cmd.OutOrStdout(), "%-10s %7d docs %10d chars %6d entries dropped\n", s.Source, s.Docs, s.Chars, s.Dropped)
			}
			return nil
		},
	}
	f := corpus.Flags()
	f.StringVar(&corpusOut, "out", "", "output .jsonl")
	f.StringSliceVar(&co.HH, "hh", nil, "HH-RLHF files whose dialogues go in (comma-separated)")
	f.IntVar(&co.HHRepeat, "hh-repeat", 1, "copies of the HH dialogues")
	f.StringVar(&co.WordNet, "wordnet", "", "WordNet 3.0 dict directory (Debian wordnet-base: /usr/share/wordnet)")
	f.StringVar(&co.Fortunes, "fortunes", "", "fortune directory (Debian fortunes: /usr/share/games/fortunes)")
	f.BoolVar(&co.DropOffensive, "drop-offensive", false, "leave out every entry with a word of the List of Dirty, Naughty, Obscene and Otherwise Bad Words (as C4 was filtered)")
	f.IntVar(&co.DocChars, "doc-chars", 900, "pack short entries into documents of about this many characters")
	f.Uint64Var(&co.Seed, "seed", 1, "shuffle seed")
	cmd.AddCommand(required(corpus, "out"))
	return cmd
}

func newTokenizerCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "tokenizer", Short: "Tokenizer tools"}
	o := tokenizer.TrainOptions{SpecialTokens: []string{"<|endoftext|>"}}
	var out string
	tr := &cobra.Command{
		Use:   "train --vocab-size V --out DIR FILES...",
		Short: "Learn a byte-level BPE tokenizer.json from HH-RLHF files or text files",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(cmd *cobra.Command, files []string) error { return pipeline.Tokenizer(files, out, o) },
	}
	tr.Flags().IntVar(&o.VocabSize, "vocab-size", 2048, "vocabulary size, special tokens and bytes included")
	tr.Flags().StringVar(&out, "out", "", "output directory")
	cmd.AddCommand(required(tr, "out"))
	return cmd
}

// trainingFlags binds the training flags pretrain and train-rm share.
func trainingFlags(f *pflag.FlagSet, o *pipeline.Training, lr float64, unit string) {
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
	o.Run.GradAccum, o.Run.Keep, o.Progress = 1, 1, os.Stderr
}

func newPretrainCmd(g *globalOptions) *cobra.Command {
	o := pipeline.Pretraining{}
	cmd := &cobra.Command{
		Use:   "pretrain --tokenizer DIR --data FILE[,FILE] --out DIR",
		Short: "Train a small LLaMA-architecture model from scratch on text: corpus JSONL or HH dialogues (chosen and rejected)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return pipeline.Pretrain(cmd.Context(), o) },
	}
	f := cmd.Flags()
	trainingFlags(f, &o.Training, 3e-3, "sequences")
	f.StringVar(&o.Tokenizer, "tokenizer", "", "directory with tokenizer.json")
	shapeFlags(f, &o.Model, pipeline.Shape{Hidden: 128, Layers: 4, Heads: 4, KVHeads: 2, Intermediate: 352})
	return required(cmd, "tokenizer", "data", "out")
}

// shapeFlags binds the model-size flags pretrain and init-model share, with their defaults.
func shapeFlags(f *pflag.FlagSet, s *pipeline.Shape, def pipeline.Shape) {
	f.IntVar(&s.Hidden, "hidden", def.Hidden, "hidden size")
	f.IntVar(&s.Layers, "layers", def.Layers, "layers")
	f.IntVar(&s.Heads, "heads", def.Heads, "attention heads")
	f.IntVar(&s.KVHeads, "kv-heads", def.KVHeads, "key/value heads")
	f.IntVar(&s.Intermediate, "intermediate", def.Intermediate, "MLP size")
}

func newTrainRMCmd(g *globalOptions) *cobra.Command {
	o := pipeline.Training{}
	var base string
	cmd := &cobra.Command{
		Use:   "train-rm --base DIR --data PAIRS --eval-data PAIRS --out DIR",
		Short: "Train a Bradley-Terry reward model (base body + scalar head) and report held-out pairwise accuracy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			report, err := pipeline.RewardModel(cmd.Context(), base, o)
			if err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), report)
			}
			for _, k := range []string{"train_pairs", "train_accuracy", "heldout_pairs", "heldout_accuracy"} {
				if v, ok := report[k]; ok {
					fmt.Fprintf(cmd.OutOrStdout(), "%-18s %v\n", k, v)
				}
			}
			return nil
		},
	}
	trainingFlags(cmd.Flags(), &o, 1e-3, "chosen/rejected pairs")
	cmd.Flags().StringVar(&base, "base", "", "base model directory the reward model starts from")
	cmd.Flags().StringVar(&o.EvalData, "eval-data", "", "held-out HH-RLHF pairs for the accuracy report")
	return required(cmd, "base", "data", "out")
}

func newInitModelCmd(g *globalOptions) *cobra.Command {
	var s pipeline.Shape
	var tok, out string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "init-model --tokenizer DIR --out DIR [--hidden H --layers L ...]",
		Short: "Write a random-init LLaMA-architecture HF model directory (for benchmarks and GPU checks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := pipeline.NewModel(tok, s, seed)
			if err != nil {
				return err
			}
			if err := m.Save(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %.1fM parameters\n", out, float64(m.NumParams())/1e6)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tok, "tokenizer", "", "directory with tokenizer.json")
	f.StringVar(&out, "out", "", "output model directory")
	shapeFlags(f, &s, pipeline.Shape{Hidden: 2048, Layers: 22, Heads: 32, KVHeads: 4, Intermediate: 5632})
	f.IntVar(&s.Vocab, "vocab", 0, "vocabulary size (0: the tokenizer's)")
	f.IntVar(&s.MaxLen, "max-len", 2048, "positions")
	f.BoolVar(&s.Untied, "untied", false, "a separate LM head")
	f.Uint64Var(&seed, "seed", 1, "initialisation seed")
	return required(cmd, "tokenizer", "out")
}
