package cycle

import (
	"fmt"
	"strings"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/data"
)

// Plan is what a run will do, estimated without calling anything.
type Plan struct {
	Prompts          int     `json:"prompts"`
	Steps            int     `json:"steps"`
	PromptsPerStep   int     `json:"prompts_per_step"`
	Candidates       int     `json:"candidates_per_prompt"`
	Interactions     int     `json:"interactions"`
	GeneratedTokens  int     `json:"generated_tokens_at_most"`
	Requests         int     `json:"blackbox_requests"` // corrective follow-ups not included
	PromptTokens     int     `json:"blackbox_prompt_tokens_est"`
	CompletionTokens int     `json:"blackbox_completion_tokens_est"`
	Cost             float64 `json:"cost_est"`
	CostKnown        bool    `json:"cost_known"`
	OptimizerSteps   int     `json:"optimizer_steps"`
}

// MakePlan estimates requests, tokens (about 4 characters a token; candidates at half the
// generation budget) and cost from the price table.
func MakePlan(cfg Config) (*Plan, error) {
	prompts, err := data.ReadChatPrompts(cfg.Prompts)
	if err != nil {
		return nil, err
	}
	static, err := ReadDemos(cfg.StaticDemos)
	if err != nil {
		return nil, err
	}
	p := &Plan{Prompts: len(prompts), Steps: cfg.Steps, PromptsPerStep: cfg.BatchSize, Candidates: cfg.N,
		Interactions: cfg.Interactions, OptimizerSteps: cfg.Steps * cfg.Interactions}
	p.GeneratedTokens = cfg.Steps * cfg.BatchSize * cfg.N * cfg.MaxNewTokens
	if cfg.Blackbox.Local() {
		return p, nil
	}
	p.Requests = cfg.Steps * cfg.BatchSize * cfg.Interactions
	if cfg.Blackbox.Consistency {
		p.Requests *= 2
	}
	avgPrompt := 0
	for _, s := range prompts {
		avgPrompt += len(s.Plain()) / 4
	}
	avgPrompt /= len(prompts)
	cand := cfg.MaxNewTokens / 2
	demoTokens := 0
	for _, d := range static[:min(cfg.NumStatic, len(static))] {
		demoTokens += len(d.Prompt) / 4
		for _, c := range d.Candidates {
			demoTokens += len(c) / 4
		}
	}
	demoTokens += cfg.NumDynamic * (avgPrompt + cfg.N*cand)
	perRequest := len(blackbox.DefaultInstruction)/4 + demoTokens + avgPrompt + cfg.N*(cand+4) + 20
	p.PromptTokens = p.Requests * perRequest
	p.CompletionTokens = p.Requests * 8 * cfg.N
	prices := blackbox.DefaultPrices()
	if cfg.Blackbox.Prices != "" {
		if prices, err = blackbox.LoadPrices(cfg.Blackbox.Prices); err != nil {
			return nil, err
		}
	}
	p.Cost, p.CostKnown = prices.Cost(cfg.Blackbox.Model, p.PromptTokens, p.CompletionTokens)
	return p, nil
}

func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "prompts available      %d\n", p.Prompts)
	fmt.Fprintf(&b, "steps                  %d (x %d prompts, %d candidates each, %d interactions)\n", p.Steps, p.PromptsPerStep, p.Candidates, p.Interactions)
	fmt.Fprintf(&b, "optimizer steps        %d\n", p.OptimizerSteps)
	fmt.Fprintf(&b, "generated tokens       at most %d\n", p.GeneratedTokens)
	fmt.Fprintf(&b, "black-box requests     %d (plus one per unparseable reply)\n", p.Requests)
	fmt.Fprintf(&b, "black-box tokens       ~%d prompt, ~%d completion\n", p.PromptTokens, p.CompletionTokens)
	if p.CostKnown {
		fmt.Fprintf(&b, "estimated cost         $%.2f\n", p.Cost)
	} else if p.Requests > 0 {
		fmt.Fprintf(&b, "estimated cost         unknown (model not in the price table)\n")
	}
	return b.String()
}
