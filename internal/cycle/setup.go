package cycle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/eval"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/lockfile"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/openaiapi"
	"github.com/cyclealign/cyclealign/internal/train"
)

// ReadDemos reads a JSON array of demonstrations ("" gives the shipped ones) and checks that
// every ranking is a ranking of its candidates.
func ReadDemos(path string) ([]blackbox.Demo, error) {
	if path == "" {
		return DefaultDemos(), nil
	}
	b, err := files.ReadFile(path)
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

// LoadRunConfig reads the effective configuration a run directory was started with, for a
// resume. The run is wherever dir is now: out becomes dir, and a black-box cache that lay
// inside the old run directory is taken from inside dir, so a moved or copied run neither
// starts afresh with an empty cache nor writes into the original.
func LoadRunConfig(dir string) (Config, error) {
	c, err := LoadConfig(filepath.Join(dir, ConfigFile))
	if err != nil {
		return c, err
	}
	if c.Blackbox.Cache != "" && c.Out != "" {
		if rel, err := filepath.Rel(c.Out, c.Blackbox.Cache); err == nil && filepath.IsLocal(rel) {
			c.Blackbox.Cache = filepath.Join(dir, rel)
		}
	}
	c.Out = dir
	return c, nil
}

// HasRun reports whether dir already holds a run (a configuration or a checkpoint).
func HasRun(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ConfigFile))
	return err == nil
}

// spentSoFar is the API cost recorded by the run's last checkpoint.
func spentSoFar(out string) float64 {
	ck, err := train.LatestCheckpoint(filepath.Join(out, "checkpoints"))
	if err != nil || ck == "" {
		return 0
	}
	var rs runState
	train.ReadJSON(filepath.Join(ck, "cycle.json"), &rs)
	return rs.Cost
}

// Prepare loads everything a run needs: the white-box (with LoRA if configured), prompts,
// static demonstrations and the ranker, checks the black-box is reachable, and writes the
// effective configuration into the run directory. Nothing is trained yet.
func Prepare(ctx context.Context, cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prompts, err := data.ReadChatPrompts(cfg.Prompts)
	if err != nil {
		return nil, err
	}
	static, err := ReadDemos(cfg.StaticDemos)
	if err != nil {
		return nil, err
	}
	lock, err := lockfile.Acquire(cfg.Out)
	if err != nil {
		return nil, err
	}
	r, err := prepare(ctx, cfg, prompts, static)
	if err != nil {
		lock.Release()
		return nil, err
	}
	r.lock = lock
	return r, nil
}

func prepare(ctx context.Context, cfg Config, prompts []chat.Prompt, static []blackbox.Demo) (*Runner, error) {
	// The config keeps the cache setting as given: the default, inside the run directory, is
	// derived each time, so the run stays relocatable.
	written := cfg
	if cfg.Blackbox.Cache == "" && !cfg.Blackbox.Local() {
		cfg.Blackbox.Cache = filepath.Join(cfg.Out, "cache")
	}
	ranker, err := cfg.Blackbox.Build(spentSoFar(cfg.Out))
	if err != nil {
		return nil, err
	}
	r := &Runner{Cfg: cfg, Ranker: ranker, Static: static, Prompts: prompts}
	if llm, ok := ranker.(*blackbox.LLM); ok {
		if err := llm.Check(ctx); err != nil {
			return nil, err
		}
	}
	b, err := model.NewBackend()
	if err != nil {
		return nil, err
	}
	if r.M, err = model.Load(b, cfg.Model); err != nil {
		return nil, err
	}
	r.M.Recompute = cfg.GradientCheckpointing
	switch {
	case r.chat() && r.M.Chat == nil:
		return nil, fmt.Errorf("%s holds conversations, but %s has no chat template (chat_template.jinja or tokenizer_config.json's chat_template)", cfg.Prompts, cfg.Model)
	case r.chat():
		slog.Info("conversations are rendered with the model's chat template; replies end with its turn end", "template", r.M.Chat.Source, "turn_end", r.M.TurnEnd())
	default:
		slog.Info("prompts are text in the HH format; replies end at the stop strings", "stop", r.Cfg.Stop)
	}
	if cfg.LoRAR > 0 {
		lora := model.LoRA{R: cfg.LoRAR, Alpha: cfg.LoRAAlpha, Dropout: cfg.LoRADropout, Targets: cfg.LoRATargets}
		if err := r.M.AddLoRA(lora, cfg.Seed); err != nil {
			return nil, err
		}
	}
	if cfg.GenerateURL != "" {
		o := openaiapi.Options{URL: cfg.GenerateURL, Timeout: cfg.Blackbox.Timeout}
		if cfg.GenerateKeyEnv != "" {
			if o.Key = os.Getenv(cfg.GenerateKeyEnv); o.Key == "" {
				return nil, fmt.Errorf("generate_api_key_env: $%s is empty", cfg.GenerateKeyEnv)
			}
		}
		api := &generate.Remote{Client: openaiapi.New(o)}
		r.remote = &remoteSampler{api: api, base: cfg.GenerateModel, out: cfg.Out, version: -1, wait: 2 * time.Minute}
	}
	if cfg.EvalEvery > 0 {
		if err := r.setupEval(cfg); err != nil {
			return nil, err
		}
	}
	return r, WriteConfig(written)
}

// Close gives up the run directory's lock.
func (r *Runner) Close() { r.lock.Release() }

// setupEval wires the periodic held-out evaluation: greedy responses to EvalN prompts scored by
// the evaluation reward model, and preference accuracy when the file holds pairs.
func (r *Runner) setupEval(cfg Config) error {
	if cfg.EvalPrompts == "" || cfg.EvalReward == "" {
		return fmt.Errorf("config eval_every needs eval_prompts and eval_reward_model")
	}
	eo := eval.Options{MaxNewTokens: cfg.MaxNewTokens, Seed: cfg.Seed}
	var err error
	if eo.Prompts, eo.Conversations, eo.Pairs, err = data.ReadEval(cfg.EvalPrompts); err != nil {
		return err
	}
	eo.Prompts = eo.Prompts[:min(cfg.EvalN, len(eo.Prompts))]
	eo.Pairs = eo.Pairs[:min(cfg.EvalN, len(eo.Pairs))]
	if eo.Conversations != nil {
		eo.Conversations = eo.Conversations[:len(eo.Prompts)]
	}
	rm, err := model.Load(r.M.Backend, cfg.EvalReward)
	if err != nil {
		return err
	}
	eo.RewardModel = &blackbox.RewardModel{M: rm, Name: cfg.EvalReward}
	r.Eval = func(ctx context.Context, step int) (map[string]float64, error) {
		o := eo
		o.Model = r.M
		rep, err := eval.Run(ctx, o)
		if err != nil {
			return nil, err
		}
		out := map[string]float64{"reward": rep.Reward.Mean, "reward_ci_lo": rep.Reward.Lo, "reward_ci_hi": rep.Reward.Hi}
		if rep.PreferenceAccuracy != nil {
			out["preference_accuracy"] = rep.PreferenceAccuracy.Mean
		}
		return out, nil
	}
	return nil
}

// WriteConfig writes the effective configuration as the run directory's config.yaml.
func WriteConfig(cfg Config) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return files.WriteAtomic(filepath.Join(cfg.Out, ConfigFile), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Finish writes the trained white-box as a HF directory in out/model (LoRA merged in, in
// save_dtype; the adapter alone in PEFT's format in out/adapter).
func (r *Runner) Finish() error {
	if r.M.HasLoRA() {
		if err := r.M.SaveAdapter(filepath.Join(r.Cfg.Out, "adapter")); err != nil {
			return err
		}
		if err := r.M.MergeLoRA(); err != nil {
			return err
		}
	}
	return r.M.SaveAs(filepath.Join(r.Cfg.Out, "model"), r.Cfg.SaveDType)
}
