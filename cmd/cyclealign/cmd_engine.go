package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/bench"
	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
)

type tokenizeOptions struct {
	Model     string
	NoSpecial bool
	Chat      string
	AddGen    bool
}

func newTokenizeCmd(g *globalOptions) *cobra.Command {
	o := &tokenizeOptions{}
	cmd := &cobra.Command{
		Use:   "tokenize --model DIR [--no-special] TEXT | --chat FILE [--add-generation-prompt]",
		Short: "Encode text, or a conversation rendered by the model's chat template, with its tokenizer",
		Long: `Encode text with the model's tokenizer.json, or, with --chat FILE (a JSON array of OpenAI-style
messages), render the conversation with the model's chat template and encode it as transformers'
apply_chat_template does: special tokens matched, no BOS added (the template writes its own).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.Chat != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runTokenize(cmd, g, o, args) },
	}
	cmd.Flags().StringVar(&o.Model, "model", "", "HF model directory (its tokenizer.json is used)")
	cmd.Flags().BoolVar(&o.NoSpecial, "no-special", false, "do not add the post-processor's special tokens")
	cmd.Flags().StringVar(&o.Chat, "chat", "", "JSON file of OpenAI-style messages to render with the model's chat template")
	cmd.Flags().BoolVar(&o.AddGen, "add-generation-prompt", false, "with --chat: end with the template's opening of an assistant turn")
	return required(cmd, "model")
}

func runTokenize(cmd *cobra.Command, g *globalOptions, o *tokenizeOptions, args []string) error {
	// Only the tokenizer (and for --chat the template) is needed: no weights are read.
	tok, err := tokenizer.Load(filepath.Join(o.Model, "tokenizer.json"))
	if err != nil {
		return err
	}
	var text string
	var ids []int
	if o.Chat != "" {
		if text, err = renderChatFile(o.Model, o.Chat, o.AddGen); err != nil {
			return err
		}
		ids = tok.Encode(text, false)
	} else {
		text = args[0]
		ids = tok.Encode(text, !o.NoSpecial)
	}
	out := struct {
		Text   string   `json:"text"`
		IDs    []int    `json:"ids"`
		Tokens []string `json:"tokens"`
	}{text, ids, tok.Tokens(ids)}
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), out)
	}
	for i, id := range ids {
		fmt.Fprintf(cmd.OutOrStdout(), "%6d  %q\n", id, out.Tokens[i])
	}
	return nil
}

// renderChatFile renders the messages of a JSON file with the chat template of model dir.
func renderChatFile(dir, path string, addGen bool) (string, error) {
	t, _, err := chat.Load(dir)
	if err != nil {
		return "", err
	}
	if t == nil {
		return "", fmt.Errorf("%s has no chat template (chat_template.jinja or tokenizer_config.json's chat_template)", dir)
	}
	msgs, err := chat.ReadMessages(path)
	if err != nil {
		return "", err
	}
	return t.Render(msgs, addGen, false)
}

type scoreOptions struct {
	Model, Prompt, Response, Chat string
}

func newScoreCmd(g *globalOptions) *cobra.Command {
	o := &scoreOptions{}
	cmd := &cobra.Command{
		Use:   "score --model DIR (--prompt P | --chat FILE) --response R",
		Short: "Log-probability of a response given a prompt, per token, summed and length-normalised",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runScore(cmd, g, o) },
	}
	cmd.Flags().StringVar(&o.Model, "model", "", "HF model directory")
	cmd.Flags().StringVar(&o.Prompt, "prompt", "", "prompt text (encoded with special tokens)")
	cmd.Flags().StringVar(&o.Response, "response", "", "response text (encoded without special tokens)")
	cmd.Flags().StringVar(&o.Chat, "chat", "", "JSON file of OpenAI-style messages: the prompt is their rendering by the model's chat template, with the generation prompt")
	cmd.MarkFlagsMutuallyExclusive("prompt", "chat")
	return required(cmd, "model")
}

// promptIDs are the tokens of --prompt (the HH format) or of --chat's conversation rendered by
// the model's chat template with the generation prompt.
func promptIDs(m *model.Model, prompt, chatFile string) ([]int, error) {
	if chatFile == "" {
		return m.PromptIDs(chat.Prompt{Text: prompt})
	}
	msgs, err := chat.ReadMessages(chatFile)
	if err != nil {
		return nil, err
	}
	return m.PromptIDs(chat.Prompt{Messages: msgs})
}

func runScore(cmd *cobra.Command, g *globalOptions, o *scoreOptions) error {
	m, err := loadModel(o.Model)
	if err != nil {
		return err
	}
	if (o.Prompt == "" && o.Chat == "") || o.Response == "" {
		return fmt.Errorf("--prompt (or --chat) and --response are both needed (a response's first token needs context)")
	}
	p, err := promptIDs(m, o.Prompt, o.Chat)
	if err != nil {
		return err
	}
	s, err := m.ScoreIDs(cmd.Context(), [][]int{p}, [][]int{m.Tokenizer.Encode(o.Response, false)})
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), s[0])
	}
	fmt.Fprintf(cmd.OutOrStdout(), "response tokens %d, sum %.6f, mean %.6f\n", len(s[0].ResponseIDs), s[0].Sum, s[0].Mean)
	return nil
}

type generateOptions struct {
	Model, Prompt, Chat string
	Opt                 generate.Options
}

func (o *generateOptions) AddFlags(f *pflag.FlagSet) {
	d := generate.Defaults()
	f.StringVar(&o.Model, "model", "", "HF model directory")
	f.StringVar(&o.Prompt, "prompt", "", "prompt text")
	f.StringVar(&o.Chat, "chat", "", "JSON file of OpenAI-style messages, rendered by the model's chat template with the generation prompt (replies end at the model's end tokens)")
	f.IntVarP(&o.Opt.N, "n", "n", 1, "completions to sample")
	f.IntVar(&o.Opt.MaxNewTokens, "max-new-tokens", d.MaxNewTokens, "tokens to generate at most")
	f.BoolVar(&o.Opt.Greedy, "greedy", false, "argmax decoding")
	f.Float64Var(&o.Opt.Temperature, "temperature", d.Temperature, "sampling temperature")
	f.Float64Var(&o.Opt.TopP, "top-p", d.TopP, "nucleus sampling mass (1 = off)")
	f.IntVar(&o.Opt.TopK, "top-k", 0, "sample among the k most likely tokens (0 = off)")
	f.Uint64Var(&o.Opt.Seed, "seed", 0, "random seed")
	o.Opt.Stop = d.Stop
	stringsFlag(f, &o.Opt.Stop, "stop", "stop string (repeatable)")
	f.BoolVar(&o.Opt.IgnoreEOS, "ignore-eos", false, "do not stop at the EOS token")
	f.BoolVar(&o.Opt.NoCache, "no-cache", false, "recompute the whole window at each step (slow; for comparison)")
}

func newGenerateCmd(g *globalOptions) *cobra.Command {
	o := &generateOptions{}
	cmd := &cobra.Command{
		Use:   "generate --model DIR (--prompt P | --chat FILE) [-n N] [--greedy] [--max-new-tokens K] [--temperature T] [--top-p P] [--seed S]",
		Short: "Sample completions of a prompt",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runGenerate(cmd, g, o) },
	}
	o.AddFlags(cmd.Flags())
	cmd.MarkFlagsMutuallyExclusive("prompt", "chat")
	return required(cmd, "model")
}

func runGenerate(cmd *cobra.Command, g *globalOptions, o *generateOptions) error {
	m, err := loadModel(o.Model)
	if err != nil {
		return err
	}
	p, err := promptIDs(m, o.Prompt, o.Chat)
	if err != nil {
		return err
	}
	// A conversation's reply ends at the model's end tokens; the HH turn end is no stop for it
	// unless asked for.
	if o.Chat != "" && !cmd.Flags().Changed("stop") {
		o.Opt.Stop = nil
	}
	res, err := generate.IDs(cmd.Context(), m, [][]int{p}, o.Opt)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), map[string]any{"completions": res[0]})
	}
	for i, c := range res[0] {
		fmt.Fprintf(cmd.OutOrStdout(), "--- completion %d (%s, %d tokens)\n%s\n", i+1, c.FinishReason, len(c.IDs), c.Text)
	}
	return nil
}

func newBenchCmd(g *globalOptions) *cobra.Command {
	o := bench.Defaults()
	to := bench.DefaultTrain()
	var trainBench, serveBench, compareTorch, compareLlamaCpp, uncached bool
	var serveSeconds, clients int
	var engine, engines, size, llamaModules string
	cmd := &cobra.Command{
		Use:   "bench [--size 10m|100m] [--dtype float32|bfloat16] [--compare-torch] [--compare-llamacpp] [--train | --serve]",
		Short: "Measure scoring and generation (or training, or serving) on a random-init LLaMA model, every engine side by side",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applySize(cmd.Flags(), &o, size); err != nil {
				return err
			}
			switch {
			case o.DType != "float32" && o.DType != "bfloat16":
				return fmt.Errorf("--dtype: %q (float32 or bfloat16)", o.DType)
			case o.DType != "float32" && compareTorch:
				return fmt.Errorf("--compare-torch: the PyTorch twin runs float32 only; measure --dtype bfloat16 without it")
			}
			b, err := model.NewBackend()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			switch {
			case trainBench:
				if !cmd.Flags().Changed("engines") {
					engines = "cpu,gomlx"
				}
				return runTrainBench(cmd, g, b, o, to, engine, engines, compareTorch)
			case serveBench:
				var rs []*bench.ServeResult
				for _, on := range []bool{true, false} {
					r, err := bench.Serve(ctx, b, o, on, clients, time.Duration(serveSeconds)*time.Second)
					if err != nil {
						return err
					}
					rs = append(rs, r)
				}
				if g.JSON {
					return printJSON(cmd.OutOrStdout(), rs)
				}
				fmt.Fprint(cmd.OutOrStdout(), bench.ServeTable(rs))
				return nil
			case engine != "": // one engine, in this process (the parent runs each this way)
				res, err := bench.Run(ctx, b, o, engine, uncached, func(f string, a ...any) { slog.Info(fmt.Sprintf(f, a...)) })
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), res)
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			base := bench.Baselines{Torch: compareTorch}
			if compareLlamaCpp {
				base.LlamaCppModules = llamaModules
			}
			c, err := bench.Compare(ctx, b, self, o, to, strings.Split(engines, ","), base, uncached, o.Args())
			if err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), c)
			}
			fmt.Fprint(cmd.OutOrStdout(), c.Table())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&size, "size", "10m", "model preset: 10m (the bench model) or 100m; the size flags below override it")
	f.IntVar(&o.Hidden, "hidden", o.Hidden, "hidden size")
	f.IntVar(&o.Layers, "layers", o.Layers, "layers")
	f.IntVar(&o.Heads, "heads", o.Heads, "attention heads")
	f.IntVar(&o.KVHeads, "kv-heads", o.KVHeads, "key/value heads")
	f.IntVar(&o.Intermediate, "intermediate", o.Intermediate, "MLP width")
	f.IntVar(&o.Vocab, "vocab", o.Vocab, "vocabulary size")
	f.BoolVar(&o.Tied, "tied", o.Tied, "tie the LM head to the embeddings")
	f.StringVar(&o.DType, "dtype", o.DType, "weights as a checkpoint stores them: float32, or bfloat16 (kept bf16 by the engine)")
	f.IntVar(&o.Batch, "batch", o.Batch, "rows")
	f.IntVar(&o.NewTokens, "new-tokens", o.NewTokens, "tokens generated per row")
	f.IntVar(&o.PromptLen, "prompt-len", o.PromptLen, "prompt tokens before generation")
	f.IntVar(&o.ScoreLen, "score-len", o.ScoreLen, "tokens per scored sequence")
	f.StringVar(&engines, "engines", "cpu,gomlx", "engines to compare: cpu (own kernels), gomlx (graphs on simplego); with --train also gomlx-stock (GoMLX's own DotGeneral gradient)")
	f.StringVar(&engine, "engine", "", "measure this engine alone, in this process, and print JSON")
	f.BoolVar(&compareTorch, "compare-torch", false, "also run the PyTorch twin (needs python3 with torch)")
	f.BoolVar(&compareLlamaCpp, "compare-llamacpp", false, "also run llama.cpp on the same model converted to GGUF (needs node and npm node-llama-cpp "+bench.LlamaCppVersion+")")
	f.StringVar(&llamaModules, "llamacpp-modules", "scripts/llamacpp/node_modules", "node_modules folder holding node-llama-cpp (scripts/llamacpp: npm ci --ignore-scripts)")
	f.BoolVar(&uncached, "uncached", false, "also time generation that recomputes the prefix (the KV cache's baseline)")
	f.BoolVar(&trainBench, "train", false, "benchmark a PRO training step (full fine-tuning) instead")
	f.BoolVar(&serveBench, "serve", false, "benchmark the server with concurrent clients, batching on and off")
	f.IntVar(&serveSeconds, "serve-seconds", 30, "duration of each serving run")
	f.IntVar(&clients, "clients", 64, "concurrent clients in the serving benchmark")
	f.IntVar(&to.Steps, "train-steps", to.Steps, "timed training steps per gradient")
	f.IntVar(&to.ReplyLen, "reply-len", to.ReplyLen, "candidate tokens in the training benchmark")
	return cmd
}

// applySize sets the preset's model size for every size flag the user did not give.
func applySize(f *pflag.FlagSet, o *bench.Options, size string) error {
	var p bench.Options
	switch size {
	case "10m":
		p = bench.Defaults()
	case "100m":
		p = bench.Size100M()
	default:
		return fmt.Errorf("--size: %q is not a preset (10m or 100m)", size)
	}
	for _, x := range []struct {
		flag   string
		dst    *int
		preset int
	}{{"hidden", &o.Hidden, p.Hidden}, {"layers", &o.Layers, p.Layers}, {"heads", &o.Heads, p.Heads},
		{"kv-heads", &o.KVHeads, p.KVHeads}, {"intermediate", &o.Intermediate, p.Intermediate}, {"vocab", &o.Vocab, p.Vocab}} {
		if !f.Changed(x.flag) {
			*x.dst = x.preset
		}
	}
	if !f.Changed("tied") {
		o.Tied = p.Tied
	}
	return nil
}

func runTrainBench(cmd *cobra.Command, g *globalOptions, b backends.Backend, o bench.Options, to bench.TrainOptions, engine, engines string, compareTorch bool) error {
	ctx := cmd.Context()
	if engine != "" { // one engine, in this process (the parent runs each this way)
		r, err := bench.Train(ctx, b, o, to, engine)
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), r)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rs, err := bench.CompareTraining(ctx, self, o, to, strings.Split(engines, ","), compareTorch)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(cmd.OutOrStdout(), rs)
	}
	fmt.Fprint(cmd.OutOrStdout(), bench.TrainTable(rs))
	return nil
}
