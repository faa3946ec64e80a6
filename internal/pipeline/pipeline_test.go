package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
	"github.com/cyclealign/cyclealign/internal/train"
)

// TestPipelineEndToEnd builds every part of a default from a small HH file: split, tokenizer,
// a base model pre-trained from scratch whose loss falls, and a reward model with its report.
func TestPipelineEndToEnd(t *testing.T) {
	dir := t.TempDir()
	hh := filepath.Join(dir, "hh.jsonl")
	var b strings.Builder
	for i := 0; i < 60; i++ {
		line, _ := json.Marshal(map[string]string{
			"chosen":   fmt.Sprintf("\n\nHuman: How do I cook dish %d?\n\nAssistant: Boil water, then add the pasta and salt.", i),
			"rejected": fmt.Sprintf("\n\nHuman: How do I cook dish %d?\n\nAssistant: No.", i)})
		b.Write(append(line, '\n'))
	}
	os.WriteFile(hh, []byte(b.String()), 0o644)
	parts, skipped, err := Split(hh, filepath.Join(dir, "split"))
	if err != nil || skipped != 0 || len(parts) != 5 {
		t.Fatalf("split: %v %d %v", parts, skipped, err)
	}
	total := 0
	for _, p := range parts {
		got, _, err := data.ReadHH(p.File)
		if err != nil || len(got) != p.Pairs {
			t.Fatalf("%s: %d pairs read, %d reported (%v)", p.Name, len(got), p.Pairs, err)
		}
		total += p.Pairs
	}
	if total != 60 {
		t.Fatalf("the parts hold %d pairs of 60", total)
	}
	base := parts[0].File
	tokDir := filepath.Join(dir, "tok")
	if err := Tokenizer([]string{base}, tokDir, tokenizer.TrainOptions{VocabSize: 300, SpecialTokens: []string{"<|endoftext|>"}}); err != nil {
		t.Fatal(err)
	}
	run := train.RunOptions{Epochs: 3, BatchSize: 8, GradAccum: 1, Keep: 1, Seed: 1}
	pre := Pretraining{Training: Training{Out: filepath.Join(dir, "base"), Data: base, MaxLen: 64, LR: 3e-3, WarmupRatio: 0.05, Run: run},
		Tokenizer: tokDir, Model: Shape{Hidden: 32, Layers: 2, Heads: 2, KVHeads: 1, Intermediate: 64}}
	short := pre
	short.MaxLen = 1
	if err := Pretrain(context.Background(), short); err == nil || !strings.Contains(err.Error(), "max length 1") {
		t.Fatalf("max length 1: %v, want an error saying so", err)
	}
	if _, err := RewardModel(context.Background(), base, short.Training); err == nil || !strings.Contains(err.Error(), "max length 1") {
		t.Fatalf("reward model at max length 1: %v, want an error saying so", err)
	}
	if err := Pretrain(context.Background(), pre); err != nil {
		t.Fatal(err)
	}
	var first, last train.Metrics
	lines := strings.Split(strings.TrimSpace(readFile(t, filepath.Join(pre.Out, "metrics.jsonl"))), "\n")
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if !(last.Loss < first.Loss) {
		t.Fatalf("pre-training loss %v → %v did not fall", first.Loss, last.Loss)
	}
	// A held-out file that cannot be read fails before any training is spent or written.
	badOut := filepath.Join(dir, "rm-bad")
	if _, err := RewardModel(context.Background(), pre.Out, Training{Out: badOut, Data: parts[1].File,
		EvalData: filepath.Join(dir, "missing.jsonl"), MaxLen: 64, LR: 1e-3, Run: run}); err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Fatalf("a missing held-out file: %v", err)
	}
	if _, err := os.Stat(badOut); err == nil {
		t.Fatalf("the reward model trained (%s written) before its held-out file was read", badOut)
	}
	report, err := RewardModel(context.Background(), pre.Out, Training{Out: filepath.Join(dir, "rm"), Data: parts[1].File,
		EvalData: parts[4].File, MaxLen: 64, LR: 1e-3, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"train_accuracy", "heldout_accuracy"} {
		if acc, ok := report[k].(float64); !ok || acc < 0 || acc > 1 {
			t.Fatalf("report %v", report)
		}
	}
	for _, f := range []string{"base/model.safetensors", "base/tokenizer.json", "rm/model.safetensors", "rm/rm_eval.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
