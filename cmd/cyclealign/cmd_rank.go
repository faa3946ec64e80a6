package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/cycle"
	"github.com/cyclealign/cyclealign/internal/files"
)

// addBlackboxFlags binds the ranker's settings; align and rank share them.
func addBlackboxFlags(f *pflag.FlagSet, o *blackbox.Options) {
	d := blackbox.DefaultOptions()
	f.StringVar(&o.URL, "blackbox-url", "", "OpenAI-compatible API base, e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
	f.StringVar(&o.Model, "blackbox-model", "", "black-box model name")
	f.StringVar(&o.KeyEnv, "api-key-env", d.KeyEnv, "environment variable holding the API key")
	f.StringVar(&o.KeyFile, "api-key-file", "", "file holding the API key (instead of the environment)")
	f.StringVar(&o.RewardModel, "reward-model", "", "rank with a local reward model directory instead of an API")
	f.StringVar(&o.Lexicon, "lexicon-judge", "", "rank offline with a lexicon judge instead of an API: harmless (the demo's)")
	f.Float64Var(&o.DemoWeight, "demo-weight", d.DemoWeight, "how far the lexicon judge's demonstrations move its scores")
	f.StringVar(&o.Instruction, "instruction", "", "file with the ranking instruction (default: a helpful/harmless/honest rubric)")
	f.StringVar(&o.Prices, "prices", "", "JSON price table (USD per million tokens) replacing the shipped one")
	f.StringVar(&o.Cache, "cache", "", "directory caching every request and reply")
	f.Float64Var(&o.Temperature, "blackbox-temperature", 0, "black-box sampling temperature")
	f.IntVar(&o.MaxTokens, "blackbox-max-tokens", d.MaxTokens, "reply budget of each black-box request")
	f.Float64Var(&o.MaxCost, "max-cost", 0, "stop once the estimated API cost reaches this many USD (0: no limit)")
	f.IntVar(&o.Concurrency, "concurrency", d.Concurrency, "black-box requests in flight")
	f.IntVar(&o.RPM, "rpm", 0, "requests per minute limit (0: none)")
	f.IntVar(&o.TPM, "tpm", 0, "tokens per minute limit (0: none)")
	f.IntVar(&o.MaxAttempts, "max-attempts", d.MaxAttempts, "attempts per request, retries included")
	f.DurationVar(&o.Timeout, "request-timeout", d.Timeout, "timeout of one request, to the black-box and to a generation server (--generate-url)")
	f.BoolVar(&o.Consistency, "consistency", false, "ask each ranking twice in different orders and keep what both agree on")
	f.IntVar(&o.PromptTokens, "max-prompt-tokens", d.PromptTokens, "truncate prompts shown to the ranker to about this many tokens (marked)")
	f.IntVar(&o.CandidateTokens, "max-candidate-tokens", d.CandidateTokens, "truncate candidates shown to the ranker likewise")
}

type rankOptions struct {
	BB                       blackbox.Options
	Prompt, Candidates, Demo string
	Seed                     uint64
}

func newRankCmd(g *globalOptions) *cobra.Command {
	o := &rankOptions{}
	cmd := &cobra.Command{
		Use:   "rank --blackbox-url URL --blackbox-model NAME --prompt P --candidates FILE [--demos FILE]",
		Short: "Rank candidates with the black-box ranker, by hand",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cands []string
			b, err := files.ReadFile(o.Candidates)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &cands); err != nil {
				return fmt.Errorf("%s: want a JSON array of strings: %w", o.Candidates, err)
			}
			var demos []blackbox.Demo
			if o.Demo != "" {
				if demos, err = cycle.ReadDemos(o.Demo); err != nil {
					return err
				}
			}
			r, err := o.BB.Build(0)
			if err != nil {
				return err
			}
			if llm, ok := r.(*blackbox.LLM); ok {
				if err := llm.Check(cmd.Context()); err != nil {
					return err
				}
			}
			res, err := r.Rank(cmd.Context(), blackbox.Request{Prompt: o.Prompt, Candidates: cands, Demos: demos, Seed: o.Seed})
			if err != nil {
				return err
			}
			if g.JSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if res.Unranked {
				fmt.Fprintf(cmd.OutOrStdout(), "unranked; replies: %q\n", res.Raw)
				return nil
			}
			for i, c := range res.Ranking {
				fmt.Fprintf(cmd.OutOrStdout(), "%d. [%d] %s\n", i+1, c, cands[c])
			}
			return nil
		},
	}
	addBlackboxFlags(cmd.Flags(), &o.BB)
	// --model names a model directory everywhere else; the old spelling still works here.
	cmd.Flags().StringVar(&o.BB.Model, "model", "", "black-box model name")
	cmd.Flags().MarkDeprecated("model", "use --blackbox-model")
	cmd.Flags().StringVar(&o.Prompt, "prompt", "", "the prompt")
	cmd.Flags().StringVar(&o.Candidates, "candidates", "", "JSON array of candidate strings")
	cmd.Flags().StringVar(&o.Demo, "demos", "", "JSON array of demonstrations {prompt, candidates, ranking (0-based, best first)}")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 0, "seed of the order candidates are shown in")
	return cmd
}
