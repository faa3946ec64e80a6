package blackbox

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/lexicon"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/openaiapi"
)

// Options are a ranker's settings as users give them (flags or a run's YAML). They name where
// the API key is, never the key itself.
type Options struct {
	URL             string        `yaml:"url"`
	Model           string        `yaml:"model"`
	KeyEnv          string        `yaml:"api_key_env"`
	KeyFile         string        `yaml:"api_key_file"`
	RewardModel     string        `yaml:"reward_model"`
	Lexicon         string        `yaml:"lexicon"`     // "harmless": the offline lexicon judge (see package lexicon)
	DemoWeight      float64       `yaml:"demo_weight"` // how far the lexicon judge's demonstrations move it
	Instruction     string        `yaml:"instruction"`
	Prices          string        `yaml:"prices"`
	Cache           string        `yaml:"cache"`
	Temperature     float64       `yaml:"temperature"`
	MaxTokens       int           `yaml:"max_tokens"`
	MaxCost         float64       `yaml:"max_cost"`
	Concurrency     int           `yaml:"concurrency"`
	RPM             int           `yaml:"rpm"`
	TPM             int           `yaml:"tpm"`
	MaxAttempts     int           `yaml:"max_attempts"`
	Timeout         time.Duration `yaml:"timeout"`
	Consistency     bool          `yaml:"consistency"`
	PromptTokens    int           `yaml:"max_prompt_tokens"`
	CandidateTokens int           `yaml:"max_candidate_tokens"`
}

// DefaultOptions are the ranker defaults.
func DefaultOptions() Options {
	return Options{KeyEnv: "OPENAI_API_KEY", DemoWeight: 1, Concurrency: 8, MaxAttempts: 6, Timeout: 120 * time.Second, MaxTokens: 512,
		PromptTokens: 1024, CandidateTokens: 512}
}

// Local reports whether the ranker runs in-process (no API, no cache, no cost).
func (o Options) Local() bool { return o.RewardModel != "" || o.Lexicon != "" }

// Build returns the configured ranker; spent is a resumed run's earlier API spend.
func (o Options) Build(spent float64) (Ranker, error) {
	switch o.Lexicon {
	case "":
	case "harmless":
		return &Judge{Scorer: &lexicon.Harmless{}, DemoWeight: o.DemoWeight}, nil
	default:
		return nil, fmt.Errorf("blackbox lexicon: unknown %q (harmless)", o.Lexicon)
	}
	if o.RewardModel != "" {
		b, err := model.NewBackend()
		if err != nil {
			return nil, err
		}
		m, err := model.Load(b, o.RewardModel)
		if err != nil {
			return nil, err
		}
		return &Judge{Scorer: &RewardModel{M: m, Name: o.RewardModel}}, nil
	}
	if o.URL == "" || o.Model == "" {
		return nil, fmt.Errorf("set the black-box URL and model (--blackbox-url, --blackbox-model), or a reward model (--reward-model DIR)")
	}
	key, err := ReadAPIKey(o.KeyEnv, o.KeyFile)
	if err != nil {
		return nil, err
	}
	p := DefaultPrompter()
	p.PromptTokens, p.CandidateTokens = o.PromptTokens, o.CandidateTokens
	if o.Instruction != "" {
		b, err := files.ReadFile(o.Instruction)
		if err != nil {
			return nil, err
		}
		p.Instruction = string(b)
	}
	cfg := LLMConfig{BaseURL: o.URL, Model: o.Model, APIKey: key, Temperature: o.Temperature, MaxTokens: o.MaxTokens,
		Concurrency: o.Concurrency, RPM: o.RPM, TPM: o.TPM, MaxAttempts: o.MaxAttempts, Timeout: o.Timeout,
		Consistency: o.Consistency, Prompter: p, Budget: NewBudget(spent, o.MaxCost)}
	if o.Prices != "" {
		if cfg.Prices, err = LoadPrices(o.Prices); err != nil {
			return nil, err
		}
	}
	if o.Cache != "" {
		if cfg.Cache, err = OpenCache(o.Cache); err != nil {
			return nil, err
		}
	}
	return NewLLM(cfg)
}

// Check asks the server for its model list before a run starts, so an unreachable URL or a
// refused key is reported at once instead of after every retry. A server without /models only
// gets a warning; a 404 there on a base URL without /v1 is most likely the wrong base.
func (l *LLM) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, min(l.cfg.Timeout, 30*time.Second))
	defer cancel()
	_, err := l.client.WithAttempts(1).Models(cctx)
	status := openaiapi.StatusOf(err)
	switch {
	case err == nil:
		return nil
	case status == http.StatusNotFound && !strings.HasSuffix(strings.TrimSuffix(l.cfg.BaseURL, "/"), "/v1"):
		return fmt.Errorf("black-box at %s: %s answered 404 Not Found; an OpenAI-compatible API base usually ends in /v1: try --blackbox-url %s/v1",
			l.cfg.BaseURL, strings.TrimSuffix(l.cfg.BaseURL, "/")+"/models", strings.TrimSuffix(l.cfg.BaseURL, "/"))
	case status != 0 && status != 401 && status != 403:
		slog.Warn("black-box server did not list its models; going on", "url", l.cfg.BaseURL, "status", status)
		return nil
	case status == 0:
		return fmt.Errorf("cannot reach the black-box at %s (tried GET %s/models): %v; is the server running, and is the URL right?",
			l.cfg.BaseURL, strings.TrimSuffix(l.cfg.BaseURL, "/"), err)
	}
	return fmt.Errorf("black-box at %s is not usable: %w", l.cfg.BaseURL, err)
}
