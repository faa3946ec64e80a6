// Package pipeline builds the embedded default's parts, the steps scripts/make-assets.sh runs:
// the split of the HH-RLHF sample, the pre-training corpus, the byte-level BPE tokenizer and
// the base model pre-trained from scratch; and Bradley–Terry reward models with their held-out
// accuracy.
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
	"github.com/cyclealign/cyclealign/internal/train"
)

// Part is one part of the split, written as chosen/rejected JSONL.
type Part struct {
	Name  string `json:"name"`
	Pairs int    `json:"pairs"`
	File  string `json:"file"`
}

// Split reads an HH-RLHF file, splits it with the fixed seed into the base, judge, evaluator,
// align and test parts, and writes each as out/NAME.jsonl. skipped counts the rows whose chosen
// and rejected prompts differ.
func Split(hh, out string) (parts []Part, skipped int, err error) {
	pairs, skipped, err := data.ReadHH(hh)
	if err != nil {
		return nil, 0, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, 0, err
	}
	s := data.Split(pairs)
	for _, p := range []struct {
		name  string
		pairs []data.Pair
	}{{"base", s.Base}, {"judge", s.Judge}, {"evaluator", s.Evaluator}, {"align", s.Align}, {"test", s.Test}} {
		var b strings.Builder
		for _, x := range p.pairs {
			line, _ := json.Marshal(map[string]string{"chosen": x.Prompt + x.Chosen, "rejected": x.Prompt + x.Rejected})
			b.Write(append(line, '\n'))
		}
		file := filepath.Join(out, p.name+".jsonl")
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			return nil, 0, err
		}
		parts = append(parts, Part{Name: p.name, Pairs: len(p.pairs), File: file})
	}
	return parts, skipped, nil
}

// Texts returns the training texts of files: JSONL ({"text"} rows, or HH rows with both
// dialogues), or plain text (a text a line).
func Texts(paths []string) ([]string, error) {
	var out []string
	for _, f := range paths {
		if strings.Contains(f, ".jsonl") {
			ts, err := data.ReadTexts(f)
			if err != nil {
				return nil, err
			}
			out = append(out, ts...)
			continue
		}
		b, err := files.ReadFile(f)
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

// Tokenizer learns a byte-level BPE tokenizer from the texts of files and writes
// out/tokenizer.json.
func Tokenizer(paths []string, out string, o tokenizer.TrainOptions) error {
	texts, err := Texts(paths)
	if err != nil {
		return err
	}
	b, err := tokenizer.Train(texts, o)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(paths, ", "), err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	slog.Info("trained tokenizer", "texts", len(texts), "out", filepath.Join(out, "tokenizer.json"))
	return os.WriteFile(filepath.Join(out, "tokenizer.json"), b, 0o644)
}

// Training are the settings pre-training and reward-model training share.
type Training struct {
	Out, Data, EvalData string
	MaxLen              int
	LR                  float64
	WarmupRatio         float64
	Run                 train.RunOptions
	Progress            io.Writer
}

// checkMaxLen refuses a sequence length that leaves no token to learn after the first.
func (o Training) checkMaxLen() error {
	if o.MaxLen < 2 {
		return fmt.Errorf("max length %d: a training sequence needs at least 2 tokens", o.MaxLen)
	}
	return nil
}

func (o Training) fit(ctx context.Context, m *model.Model, loss train.Loss, exs []train.Example) error {
	opt := train.DefaultOptimizer()
	opt.LR = o.LR
	opt = opt.Schedule(o.Run.TotalSteps(len(exs)), o.WarmupRatio)
	ro := o.Run
	ro.Out, ro.Progress = o.Out, o.Progress
	tr := train.NewTrainer(m, loss, opt)
	slog.Info("training", "examples", len(exs), "steps", opt.TotalSteps, "params", tr.NumParams())
	_, err := train.Run(ctx, tr, exs, ro)
	return err
}

// Pretraining sizes a LLaMA-architecture model trained from scratch.
type Pretraining struct {
	Training
	Tokenizer string // directory with tokenizer.json
	Model     Shape  // its MaxLen is Training's
}

// Shape sizes a LLaMA-architecture model.
type Shape struct {
	Hidden, Layers, Heads, KVHeads, Intermediate int
	Vocab                                        int  // 0: the tokenizer's
	MaxLen                                       int  // positions
	Untied                                       bool // a separate LM head
}

// NewModel builds a random-init LLaMA model of shape s around the tokenizer in dir
// (tokenizer.json), its weights stored as bfloat16 when saved.
func NewModel(tokDir string, s Shape, seed uint64) (*model.Model, error) {
	tok, err := tokenizer.Load(filepath.Join(tokDir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	vocab := s.Vocab
	if vocab == 0 {
		vocab = tok.VocabSize()
	}
	if vocab < tok.VocabSize() {
		return nil, fmt.Errorf("vocab %d is smaller than the tokenizer's %d", vocab, tok.VocabSize())
	}
	raw := map[string]any{"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"vocab_size": vocab, "hidden_size": s.Hidden, "intermediate_size": s.Intermediate,
		"num_hidden_layers": s.Layers, "num_attention_heads": s.Heads, "num_key_value_heads": s.KVHeads,
		"max_position_embeddings": s.MaxLen, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"tie_word_embeddings": !s.Untied, "hidden_act": "silu", "bos_token_id": 0, "eos_token_id": 0,
		"dtype": "bfloat16", "initializer_range": 0.02}
	b, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(b)
	if err != nil {
		return nil, err
	}
	ts, err := model.InitTensors(cfg, 0.02, seed)
	if err != nil {
		return nil, err
	}
	be, err := model.NewBackend()
	if err != nil {
		return nil, err
	}
	return model.New(be, cfg, tok, ts, "init")
}

// Pretrain trains a base model from scratch on the texts of o.Data (comma-separated files:
// corpus JSONL, or HH dialogues, chosen and rejected) and saves it as a HF directory in o.Out.
func Pretrain(ctx context.Context, o Pretraining) error {
	if err := o.checkMaxLen(); err != nil {
		return err
	}
	shape := o.Model
	shape.MaxLen = o.MaxLen
	m, err := NewModel(o.Tokenizer, shape, o.Run.Seed)
	if err != nil {
		return err
	}
	tok := m.Tokenizer
	texts, err := Texts(strings.Split(o.Data, ","))
	if err != nil {
		return err
	}
	bos := tok.Encode("", true)
	exs := make([]train.Example, len(texts))
	for i, t := range texts {
		exs[i] = train.Example{Prompt: bos, Candidates: [][]int{tok.Encode(t, false)}}.Fit(o.MaxLen)
	}
	if err := o.fit(ctx, m, train.Loss{Kind: train.SFT}, exs); err != nil {
		return err
	}
	return m.Save(o.Out)
}

// RewardModel trains a Bradley–Terry reward model (the base body plus a scalar head) on the
// pairs of o.Data, saves it in o.Out, and returns its pairwise accuracy on its training pairs
// and on o.EvalData, also written to o.Out/rm_eval.json.
func RewardModel(ctx context.Context, base string, o Training) (map[string]any, error) {
	if err := o.checkMaxLen(); err != nil {
		return nil, err
	}
	be, err := model.NewBackend()
	if err != nil {
		return nil, err
	}
	bm, err := model.Load(be, base)
	if err != nil {
		return nil, err
	}
	rm, err := bm.WithRewardHead(o.Run.Seed)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	// The held-out pairs are read before training, so a bad file costs no training time.
	sets := map[string][]train.Example{"train": exs}
	if o.EvalData != "" {
		if sets["heldout"], err = pairs(o.EvalData); err != nil {
			return nil, err
		}
	}
	if err := o.fit(ctx, rm, train.Loss{Kind: train.BT}, exs); err != nil {
		return nil, err
	}
	if err := rm.Save(o.Out); err != nil {
		return nil, err
	}
	report := map[string]any{"train_pairs": len(exs)}
	for name, ev := range sets {
		acc, err := train.PairAccuracy(ctx, rm, ev)
		if err != nil {
			return nil, err
		}
		report[name+"_accuracy"] = acc
		report[name+"_pairs"] = len(ev)
	}
	return report, train.WriteJSON(filepath.Join(o.Out, "rm_eval.json"), report)
}
