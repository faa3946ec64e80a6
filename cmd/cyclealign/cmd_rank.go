package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/model"
)

// blackboxOptions configure the ranker; align and rank share them.
type blackboxOptions struct {
	URL, Model, KeyEnv, KeyFile   string
	RewardModel                   string
	Instruction, Prices, Cache    string
	Temperature, MaxCost          float64
	Concurrency, RPM, TPM         int
	MaxAttempts                   int
	Timeout                       time.Duration
	Consistency                   bool
	PromptTokens, CandidateTokens int
}

func (o *blackboxOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.URL, "blackbox-url", "", "OpenAI-compatible API base, e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
	f.StringVar(&o.Model, "blackbox-model", "", "black-box model name")
	f.StringVar(&o.KeyEnv, "api-key-env", "OPENAI_API_KEY", "environment variable holding the API key")
	f.StringVar(&o.KeyFile, "api-key-file", "", "file holding the API key (instead of the environment)")
	f.StringVar(&o.RewardModel, "reward-model", "", "rank with a local reward model directory instead of an API")
	f.StringVar(&o.Instruction, "instruction", "", "file with the ranking instruction (default: a helpful/harmless/honest rubric)")
	f.StringVar(&o.Prices, "prices", "", "JSON price table (USD per million tokens) replacing the shipped one")
	f.StringVar(&o.Cache, "cache", "", "directory caching every request and reply")
	f.Float64Var(&o.Temperature, "blackbox-temperature", 0, "black-box sampling temperature")
	f.Float64Var(&o.MaxCost, "max-cost", 0, "stop once the estimated API cost reaches this many USD (0: no limit)")
	f.IntVar(&o.Concurrency, "concurrency", 8, "black-box requests in flight")
	f.IntVar(&o.RPM, "rpm", 0, "requests per minute limit (0: none)")
	f.IntVar(&o.TPM, "tpm", 0, "tokens per minute limit (0: none)")
	f.IntVar(&o.MaxAttempts, "max-attempts", 6, "attempts per request, retries included")
	f.DurationVar(&o.Timeout, "request-timeout", 120*time.Second, "timeout of one request")
	f.BoolVar(&o.Consistency, "consistency", false, "ask each ranking twice in different orders and keep what both agree on")
	f.IntVar(&o.PromptTokens, "max-prompt-tokens", 1024, "truncate prompts shown to the ranker to about this many tokens (marked)")
	f.IntVar(&o.CandidateTokens, "max-candidate-tokens", 512, "truncate candidates shown to the ranker likewise")
}

// build returns the configured ranker; spent is a resumed run's earlier API spend.
func (o *blackboxOptions) build(spent float64) (blackbox.Ranker, error) {
	if o.RewardModel != "" {
		b, err := model.NewBackend()
		if err != nil {
			return nil, err
		}
		m, err := model.Load(b, o.RewardModel)
		if err != nil {
			return nil, err
		}
		return &blackbox.RewardModel{M: m, Name: o.RewardModel}, nil
	}
	if o.URL == "" || o.Model == "" {
		return nil, fmt.Errorf("set --blackbox-url and --blackbox-model, or --reward-model DIR")
	}
	key, err := blackbox.ReadAPIKey(o.KeyEnv, o.KeyFile)
	if err != nil {
		return nil, err
	}
	p := blackbox.DefaultPrompter()
	p.PromptTokens, p.CandidateTokens = o.PromptTokens, o.CandidateTokens
	if o.Instruction != "" {
		b, err := os.ReadFile(o.Instruction)
		if err != nil {
			return nil, err
		}
		p.Instruction = string(b)
	}
	cfg := blackbox.LLMConfig{BaseURL: o.URL, Model: o.Model, APIKey: key, Temperature: o.Temperature,
		Concurrency: o.Concurrency, RPM: o.RPM, TPM: o.TPM, MaxAttempts: o.MaxAttempts, Timeout: o.Timeout,
		Consistency: o.Consistency, Prompter: p, Budget: blackbox.NewBudget(spent, o.MaxCost)}
	if o.Prices != "" {
		if cfg.Prices, err = blackbox.LoadPrices(o.Prices); err != nil {
			return nil, err
		}
	}
	if o.Cache != "" {
		if cfg.Cache, err = blackbox.OpenCache(o.Cache); err != nil {
			return nil, err
		}
	}
	return blackbox.NewLLM(cfg)
}

// readDemos reads a JSON array of demonstrations and checks each ranking.
func readDemos(path string) ([]blackbox.Demo, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var demos []blackbox.Demo
	if err := json.Unmarshal(b, &demos); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of {prompt, candidates, ranking}: %w", path, err)
	}
	for i, d := range demos {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("%s: demonstration %d: %w", path, i, err)
		}
	}
	return demos, nil
}

type rankOptions struct {
	BB                       blackboxOptions
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
			b, err := os.ReadFile(o.Candidates)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &cands); err != nil {
				return fmt.Errorf("%s: want a JSON array of strings: %w", o.Candidates, err)
			}
			demos, err := readDemos(o.Demo)
			if err != nil {
				return err
			}
			r, err := o.BB.build(0)
			if err != nil {
				return err
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
	o.BB.AddFlags(cmd.Flags())
	// The spelling: --model names the black-box model here.
	cmd.Flags().StringVar(&o.BB.Model, "model", "", "black-box model name (same as --blackbox-model)")
	cmd.Flags().StringVar(&o.Prompt, "prompt", "", "the prompt")
	cmd.Flags().StringVar(&o.Candidates, "candidates", "", "JSON array of candidate strings")
	cmd.Flags().StringVar(&o.Demo, "demos", "", "JSON array of demonstrations {prompt, candidates, ranking (0-based, best first)}")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 0, "seed of the order candidates are shown in")
	return cmd
}
