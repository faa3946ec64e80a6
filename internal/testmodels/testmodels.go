// Package testmodels builds small but real HF model directories for tests: a random-init Qwen2
// chat model with a byte-level BPE vocabulary learned from English text (the shipped HH-RLHF
// sample), Qwen2.5-Instruct's own chat template, and its special tokens and end-of-turn ids
// laid out as Qwen2.5-Instruct lays them out.
package testmodels

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
)

// root is the repository's root directory.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Qwen2Template is Qwen2.5-Instruct's chat template (internal/chat/testdata/templates.json).
func Qwen2Template(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(root(), "internal", "chat", "testdata", "templates.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var ts []struct{ Name, Template string }
	if err := json.Unmarshal(b, &ts); err != nil {
		tb.Fatal(err)
	}
	for _, t := range ts {
		if t.Name == "qwen2.5-instruct" {
			return t.Template
		}
	}
	tb.Fatal("no qwen2.5-instruct template")
	return ""
}

// TinyQwen2Chat writes a Qwen2 chat model into dir: 2 layers, hidden 32, a 1,024-token
// vocabulary with <|endoftext|>, <|im_start|> and <|im_end|>; config.json's eos is
// <|endoftext|>, and <|im_end|> ends a turn through generation_config.json and the tokenizer's
// eos_token, as in Qwen2.5-Instruct. The head is set so that <|im_end|> is likely after about
// one token in eight, so that short samples end their turn as a chat model's do.
func TinyQwen2Chat(tb testing.TB, dir string) {
	tb.Helper()
	texts, err := data.ReadTexts(filepath.Join(root(), "internal", "assets", "hh-rlhf", "harmless-base-test.shared.jsonl.gz"))
	if err != nil {
		tb.Fatal(err)
	}
	tokJSON, err := tokenizer.Train(texts[:600], tokenizer.TrainOptions{VocabSize: 1024, SpecialTokens: []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}})
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := tokenizer.Parse(tokJSON)
	if err != nil {
		tb.Fatal(err)
	}
	eot, _ := tok.ID("<|endoftext|>")
	imEnd, _ := tok.ID("<|im_end|>")
	const D = 32
	cfg := map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2", "hidden_size": D, "intermediate_size": 64,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": tok.VocabSize(), "max_position_embeddings": 512,
		"rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": eot, "eos_token_id": eot,
		"torch_dtype": "float32"}
	write := func(name string, v any) {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	os.MkdirAll(dir, 0o755)
	write("config.json", cfg)
	write("generation_config.json", map[string]any{"bos_token_id": eot, "eos_token_id": []int{imEnd, eot}, "do_sample": true})
	write("tokenizer_config.json", map[string]any{"bos_token": nil, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
		"model_max_length": 512, "chat_template": Qwen2Template(tb)})
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tokJSON, 0o644); err != nil {
		tb.Fatal(err)
	}
	c, err := hf.ReadConfig(dir)
	if err != nil {
		tb.Fatal(err)
	}
	ts, err := model.InitTensors(c, 0.05, 11)
	if err != nil {
		tb.Fatal(err)
	}
	// The final norm keeps one hidden unit, and the head reads <|im_end|> off it: the turn ends
	// where that unit is positive and large, every other token is equally likely.
	norm, head := ts["model.norm.weight"].Data, ts["lm_head.weight"].Data
	for i := range norm {
		norm[i] = 0
	}
	norm[0] = 1
	for i := range head {
		head[i] = 0
	}
	head[imEnd*D] = 6
	if err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		tb.Fatal(err)
	}
}

// LoadTinyQwen2Chat writes TinyQwen2Chat into a temporary directory and loads it.
func LoadTinyQwen2Chat(tb testing.TB) *model.Model {
	tb.Helper()
	dir := tb.TempDir()
	TinyQwen2Chat(tb, dir)
	b, err := model.NewBackend()
	if err != nil {
		tb.Fatal(err)
	}
	m, err := model.Load(b, dir)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}
