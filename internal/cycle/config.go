// Package cycle runs CycleAlign (docs/METHOD.md, One step): the white-box samples candidates,
// ranks them by its own length-normalised log-probability, the black-box ranks them with static
// and dynamic demonstrations, their agreement (longest common subsequence) feeds a demonstration
// pool, and the white-box trains on the black-box ranking. It owns the run directory (config,
// journal, metrics, pool, checkpoints, final model) and resuming it.
package cycle

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/train"
)

//go:embed defaults/demos.json
var defaultDemos []byte

// DefaultDemos are the shipped static demonstrations.
func DefaultDemos() []blackbox.Demo {
	var d []blackbox.Demo
	if err := json.Unmarshal(defaultDemos, &d); err != nil {
		panic(err)
	}
	return d
}

// Method names the algorithm or one of docs/METHOD.md's baselines.
type Method string

// The methods.
const (
	CycleAlign Method = "cyclealign"
	StaticICL  Method = "static-icl" // T=1, no dynamic demonstrations (the paper's baseline)
	// StaticICLMatched is StaticICL with CycleAlign's T interactions: the same optimiser steps
	// and schedule, so only the dynamic demonstrations differ (a matched control).
	StaticICLMatched Method = "static-icl-matched"
	NoAgreement      Method = "no-agreement" // every black-box ranking enters the pool
	SFTBest          Method = "sft-best"     // SFT on the black-box's top candidate only
)

// Config is every setting of a run, with docs/METHOD.md's defaults. It is read from YAML, overridden
// by flags, and written to the run directory.
type Config struct {
	Method  Method `yaml:"method"`
	Model   string `yaml:"model"`   // white-box HF directory
	Prompts string `yaml:"prompts"` // JSONL of {"prompt": ...} (or HH-RLHF rows)
	Out     string `yaml:"out"`     // run directory
	Seed    uint64 `yaml:"seed"`

	Steps     int `yaml:"steps"`      // optimisation steps (batches of prompts)
	BatchSize int `yaml:"batch_size"` // prompts per step
	// GradAccum splits a step's training into micro-batches of prompts: the same update, with the
	// activations of fewer prompts in memory at once (0 or 1: one pass).
	GradAccum int `yaml:"grad_accum"`
	// GradientCheckpointing keeps each layer's input only and runs the layer again in the
	// backward pass (transformers' gradient_checkpointing): the same update, about a third more
	// training time, a layer's activations in memory instead of all of them.
	GradientCheckpointing bool `yaml:"gradient_checkpointing"`

	N            int      `yaml:"n"` // candidates per prompt
	Temperature  float64  `yaml:"temperature"`
	TopP         float64  `yaml:"top_p"`
	MaxNewTokens int      `yaml:"max_new_tokens"`
	Stop         []string `yaml:"stop"`

	Interactions int    `yaml:"interactions"` // T
	Tau          int    `yaml:"tau"`          // agreement threshold; 0 means N-1
	PoolSize     int    `yaml:"pool_size"`    // P
	StaticDemos  string `yaml:"static_demos"` // JSON file; "" uses the shipped ones
	NumStatic    int    `yaml:"num_static"`
	NumDynamic   int    `yaml:"num_dynamic"`
	DemoSelect   string `yaml:"demo_select"` // "recent" or "similar"

	Loss        string   `yaml:"loss"` // pro or rrhf
	SFTWeight   float64  `yaml:"sft_weight"`
	SFTNorm     string   `yaml:"sft_norm"`        // mean (docs/METHOD.md) or sum (PRO's reference)
	PROTemp     bool     `yaml:"pro_temperature"` // PRO weighted by reward differences when the ranker gives rewards
	LR          float64  `yaml:"lr"`
	WeightDecay float64  `yaml:"weight_decay"`
	Clip        float64  `yaml:"clip"`
	WarmupRatio float64  `yaml:"warmup_ratio"`
	MaxResponse int      `yaml:"max_response_tokens"`
	LoRAR       int      `yaml:"lora_r"`
	LoRAAlpha   float64  `yaml:"lora_alpha"`
	LoRADropout float64  `yaml:"lora_dropout"`
	LoRATargets []string `yaml:"lora_targets"`
	SaveEvery   int      `yaml:"save_every"`
	SaveDType   string   `yaml:"save_dtype"` // out/model's dtype: float32, bfloat16, float16; "" as loaded
	Keep        int      `yaml:"keep"`

	Blackbox blackbox.Options `yaml:"blackbox"`

	// Candidates come from this OpenAI-compatible server (vLLM, SGLang, cyclealign serve)
	// instead of in-process; it is kept on the current weights (see remoteSampler).
	GenerateURL    string `yaml:"generate_url"`
	GenerateModel  string `yaml:"generate_model"`       // the server's name of the base model
	GenerateKeyEnv string `yaml:"generate_api_key_env"` // environment variable with its bearer token

	EvalEvery   int    `yaml:"eval_every"`        // evaluate every K steps (0: never)
	EvalPrompts string `yaml:"eval_prompts"`      // held-out prompts for it
	EvalN       int    `yaml:"eval_n"`            // how many of them
	EvalReward  string `yaml:"eval_reward_model"` // reward model scoring them
}

// Defaults returns docs/METHOD.md's settings.
func Defaults() Config {
	return Config{Method: CycleAlign, Steps: 10, BatchSize: 4, GradAccum: 1, N: 4, Temperature: 1, TopP: 0.9, MaxNewTokens: 128,
		Stop: []string{"\n\nHuman:"}, Interactions: 5, PoolSize: 16, NumStatic: 2, NumDynamic: 3, DemoSelect: "recent",
		Loss: "pro", SFTWeight: -1, SFTNorm: "mean", LR: 5e-6, WeightDecay: 0.01, Clip: 1, WarmupRatio: 0.1, MaxResponse: 256,
		LoRAAlpha: 16, LoRADropout: 0.05, LoRATargets: []string{"q", "k", "v", "o"}, SaveEvery: 1, Keep: 2, EvalN: 32,
		Blackbox: blackbox.DefaultOptions()}
}

// LoadConfig reads a YAML file over the defaults; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	c := Defaults()
	f, err := files.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	if err := yaml.NewDecoder(f, yaml.DisallowUnknownField()).Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Effective applies the method's fixed choices and derived defaults.
func (c Config) Effective() Config {
	switch c.Method {
	case StaticICL:
		c.Interactions, c.NumDynamic = 1, 0
	case StaticICLMatched:
		c.NumDynamic = 0
	case SFTBest:
		c.Loss = "sft"
	}
	// Record the λ the loss uses, not the "default" marker.
	if kind, err := train.ParseLoss(c.Loss); err == nil && c.SFTWeight < 0 {
		c.SFTWeight = train.DefaultSFTWeight(kind)
	}
	if c.Tau <= 0 {
		c.Tau = c.N - 1
	}
	return c
}

// Validate checks settings, naming the bad one.
func (c Config) Validate() error {
	if c.GenerateURL != "" && c.GenerateModel == "" {
		return fmt.Errorf("generate_model (--generate-model): the server's name of the base model is required with --generate-url")
	}
	switch c.Method {
	case CycleAlign, StaticICL, StaticICLMatched, NoAgreement, SFTBest:
	default:
		return fmt.Errorf("method: unknown %q (cyclealign, static-icl, static-icl-matched, no-agreement, sft-best)", c.Method)
	}
	checks := []struct {
		ok   bool
		what string
	}{
		{c.Model != "", "model: required"},
		{c.Prompts != "", "prompts: required"},
		{c.Out != "", "out: required"},
		{c.Steps >= 1, "steps: must be at least 1"},
		{c.BatchSize >= 1, "batch_size: must be at least 1"},
		{c.GradAccum >= 0 && c.GradAccum <= c.BatchSize, "grad_accum: must be from 1 to batch_size"},
		{c.N >= 2, "n: need at least 2 candidates to rank"},
		{c.Interactions >= 1, "interactions: must be at least 1"},
		{c.Tau >= 1 && c.Tau <= c.N, "tau: must be between 1 and n"},
		{c.PoolSize >= 0 && c.NumStatic >= 0 && c.NumDynamic >= 0, "pool_size, num_static, num_dynamic: must not be negative"},
		{c.DemoSelect == "recent" || c.DemoSelect == "similar", "demo_select: recent or similar"},
		{c.SFTNorm == "mean" || c.SFTNorm == "sum", "sft_norm: mean or sum"},
		{c.MaxNewTokens >= 1, "max_new_tokens: must be at least 1"},
		{c.Temperature > 0, "temperature: must be > 0"},
		{c.TopP > 0 && c.TopP <= 1, "top_p: must be in (0, 1]"},
		{c.LR > 0, "lr: must be > 0"},
		{c.LoRAR >= 0, "lora_r: must not be negative (0: full fine-tuning)"},
		{c.Blackbox.DemoWeight >= 0, "demo_weight: must not be negative (in the config it sits under blackbox:)"},
		{c.SaveEvery >= 1, "save_every: must be at least 1"},
		{model.CheckSaveDType(c.SaveDType) == nil, "save_dtype: float32, bfloat16 or float16 (empty: as loaded)"},
	}
	for _, ch := range checks {
		if !ch.ok {
			// "out: required" becomes "--out (out in the config): required", so a user of
			// either finds the setting.
			keys, msg, _ := strings.Cut(ch.what, ": ")
			var flags []string
			for _, k := range strings.Split(keys, ", ") {
				flags = append(flags, "--"+strings.ReplaceAll(k, "_", "-"))
			}
			return fmt.Errorf("%s (%s in the config): %s", strings.Join(flags, ", "), keys, msg)
		}
	}
	return nil
}
