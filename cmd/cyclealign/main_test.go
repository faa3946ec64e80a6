package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
)

func run(t *testing.T, args ...string) []byte {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.Bytes()
}

// TestCLIAgainstReference runs tokenize, score and generate as a user would and compares
// their JSON with the HF reference outputs.
func TestCLIAgainstReference(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Tokenize []struct {
			Text         string `json:"text"`
			IDs          []int  `json:"ids"`
			IDsNoSpecial []int  `json:"ids_no_special"`
		} `json:"tokenize"`
		Pairs []struct {
			Prompt, Response string
			PromptIDs        []int     `json:"prompt_ids"`
			ResponseIDs      []int     `json:"response_ids"`
			TokenLogProbs    []float64 `json:"response_token_logprobs"`
			Mean             float64   `json:"mean"`
		} `json:"pairs"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	var tok struct {
		IDs    []int    `json:"ids"`
		Tokens []string `json:"tokens"`
	}
	c := ref.Tokenize[1]
	json.Unmarshal(run(t, "tokenize", "--model", dir, "--json", c.Text), &tok)
	if !slices.Equal(tok.IDs, c.IDs) || len(tok.Tokens) != len(c.IDs) || tok.Tokens[0] != "<s>" {
		t.Fatalf("tokenize: %v %q", tok.IDs, tok.Tokens)
	}
	json.Unmarshal(run(t, "tokenize", "--model", dir, "--no-special", "--json", c.Text), &tok)
	if !slices.Equal(tok.IDs, c.IDsNoSpecial) {
		t.Fatalf("tokenize --no-special: %v", tok.IDs)
	}
	p := ref.Pairs[0]
	var sc struct {
		PromptIDs     []int     `json:"prompt_ids"`
		ResponseIDs   []int     `json:"response_ids"`
		TokenLogProbs []float64 `json:"token_logprobs"`
		Sum, Mean     float64
	}
	json.Unmarshal(run(t, "score", "--model", dir, "--prompt", p.Prompt, "--response", p.Response, "--json"), &sc)
	if !slices.Equal(sc.PromptIDs, p.PromptIDs) || !slices.Equal(sc.ResponseIDs, p.ResponseIDs) || math.Abs(sc.Mean-p.Mean) > 1e-4 {
		t.Fatalf("score: %+v", sc)
	}
	var gen struct {
		Completions []struct {
			Text string `json:"text"`
			IDs  []int  `json:"ids"`
		} `json:"completions"`
	}
	json.Unmarshal(run(t, "generate", "--model", dir, "--prompt", p.Prompt, "-n", "3", "--max-new-tokens", "6", "--seed", "5", "--stop", "zzzz", "--json"), &gen)
	if len(gen.Completions) != 3 {
		t.Fatalf("generate -n 3 returned %d completions", len(gen.Completions))
	}
	for _, c := range gen.Completions {
		if len(c.IDs) == 0 || len(c.IDs) > 6 {
			t.Fatalf("completion with %d ids", len(c.IDs))
		}
	}
}

func TestCLITrainAndLoss(t *testing.T) {
	model := filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	data := filepath.Join(t.TempDir(), "ranked.jsonl")
	os.WriteFile(data, []byte(`{"prompt": "\n\nHuman: Hi\n\nAssistant:", "candidates": [" Hello! How can I help?", " What"]}
{"query": "\n\nHuman: Name a fruit.\n\nAssistant:", "responses": [" A car.", " An apple."], "scores": [0, 1]}
`), 0o644)
	var rep struct {
		Loss      *float64 `json:"loss"`
		GradNorm  *float64 `json:"grad_global_norm"`
		PerPrompt []struct {
			Scores   []float64 `json:"scores"`
			RankTerm *float64  `json:"rank_term"`
			SFTTerm  *float64  `json:"sft_term"`
		} `json:"per_prompt"`
	}
	if err := json.Unmarshal(run(t, "loss", "--model", model, "--ranked", data, "--loss", "rrhf", "--json"), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Loss == nil || rep.GradNorm == nil || *rep.GradNorm <= 0 || len(rep.PerPrompt) != 2 || len(rep.PerPrompt[1].Scores) != 2 {
		t.Fatalf("loss report: %+v", rep)
	}
	// loss is the mean over prompts of rank + 1.0 * sft.
	want := 0.0
	for _, p := range rep.PerPrompt {
		want += (*p.RankTerm + *p.SFTTerm) / 2
	}
	if math.Abs(*rep.Loss-want) > 1e-4 {
		t.Fatalf("loss %v, terms give %v", *rep.Loss, want)
	}
	out := t.TempDir()
	run(t, "train", "--model", model, "--data", data, "--loss", "pro", "--out", out, "--epochs", "2", "--batch-size", "1", "--lora-r", "2", "--quiet",
		"--save-dtype", "bfloat16")
	if cfg, _ := os.ReadFile(filepath.Join(out, "config.json")); !bytes.Contains(cfg, []byte(`"dtype": "bfloat16"`)) {
		t.Errorf("--save-dtype bfloat16: config.json says %s", cfg)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/latest"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("train output lacks %s", f)
		}
	}
	// Recomputing each layer in the backward pass trains the same adapters, byte for byte.
	again := t.TempDir()
	run(t, "train", "--model", model, "--data", data, "--loss", "pro", "--out", again, "--epochs", "2", "--batch-size", "1", "--lora-r", "2", "--quiet",
		"--save-dtype", "bfloat16", "--gradient-checkpointing")
	a, _ := os.ReadFile(filepath.Join(out, "adapter", "adapter_model.safetensors"))
	if b, err := os.ReadFile(filepath.Join(again, "adapter", "adapter_model.safetensors")); err != nil || !bytes.Equal(a, b) {
		t.Errorf("--gradient-checkpointing trained other adapters (%v)", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte(`{"prompt": "p", "candidates": ["a", "b"]}`+"\n"+`{"prompt": "p", "candidates": ["a"]}`+"\n"), 0o644)
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetArgs([]string{"train", "--model", model, "--data", bad, "--out", t.TempDir()})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad data: %v", err)
	}
	root = newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetArgs([]string{"train", "--model", model, "--data", data, "--out", t.TempDir(), "--save-dtype", "fp8"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--save-dtype") {
		t.Fatalf("bad --save-dtype: %v", err)
	}
	// Ctrl-C: the message says what was saved and how to resume, not "context canceled".
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stopped := t.TempDir()
	root = newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetArgs([]string{"train", "--model", model, "--data", data, "--out", stopped, "--quiet"})
	err := root.ExecuteContext(ctx)
	if err == nil || !strings.Contains(err.Error(), "is saved in "+filepath.Join(stopped, "checkpoints")) || !strings.Contains(err.Error(), "run the same command again") {
		t.Fatalf("interrupted train: %v", err)
	}
}

func TestCLIRank(t *testing.T) {
	s := llmtest.New(llmtest.RankBy(func(a, b string) bool { return len(a) < len(b) }))
	defer s.Close()
	dir := t.TempDir()
	cands := filepath.Join(dir, "cands.json")
	os.WriteFile(cands, []byte(`["a longer answer", "short", "the longest answer of the three"]`), 0o644)
	demos := filepath.Join(dir, "demos.json")
	os.WriteFile(demos, []byte(`[{"prompt": "q", "candidates": ["x", "yy"], "ranking": [1, 0]}]`), 0o644)
	t.Setenv("JUDGE_KEY", "sk-cli-secret")
	var res struct {
		Ranking []int    `json:"ranking"`
		Raw     []string `json:"raw"`
		Usage   struct {
			Requests int `json:"requests"`
		} `json:"usage"`
	}
	out := run(t, "rank", "--blackbox-url", s.BaseURL(), "--blackbox-model", "judge", "--api-key-env", "JUDGE_KEY",
		"--prompt", "\n\nHuman: hi\n\nAssistant:", "--candidates", cands, "--demos", demos, "--json")
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Ranking, []int{1, 0, 2}) || res.Usage.Requests != 1 || len(res.Raw) != 1 {
		t.Fatalf("rank: %s", out)
	}
	if got := s.Requests()[0].Header.Get("Authorization"); got != "Bearer sk-cli-secret" {
		t.Fatalf("authorization %q", got)
	}
	os.WriteFile(demos, []byte(`[{"prompt": "q", "candidates": ["x", "yy"], "ranking": [1, 1]}]`), 0o644)
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetArgs([]string{"rank", "--blackbox-url", s.BaseURL(), "--blackbox-model", "judge", "--prompt", "p", "--candidates", cands, "--demos", demos})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "demonstration 0") {
		t.Fatalf("bad demos: %v", err)
	}
}

// TestTokenizeNeedsOnlyTheTokenizer: a directory holding only tokenizer.json is enough, and
// gives the same ids as the full model directory.
func TestTokenizeNeedsOnlyTheTokenizer(t *testing.T) {
	full := filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel")
	only := t.TempDir()
	b, err := os.ReadFile(filepath.Join(full, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(only, "tokenizer.json"), b, 0o644)
	a := run(t, "tokenize", "--model", only, "--json", "Hello there, world")
	if want := run(t, "tokenize", "--model", full, "--json", "Hello there, world"); !bytes.Equal(a, want) || !bytes.Contains(a, []byte(`"ids"`)) {
		t.Fatalf("tokenizer-only directory: %s, model directory: %s", a, want)
	}
}

func TestVersionFlag(t *testing.T) {
	out := string(run(t, "--version"))
	if !strings.HasPrefix(out, "cyclealign version ") || !strings.Contains(out, "go1.") {
		t.Fatalf("--version printed %q", out)
	}
}

// TestHelpAndMessagesNameTheirFlags: help texts show one default each and print escaped
// strings; errors about settings name the flag; data split prints a table.
func TestHelpAndMessagesNameTheirFlags(t *testing.T) {
	help := func(args ...string) string { return string(run(t, append(args, "--help")...)) }
	tr := help("train")
	if strings.Count(tr, "default: 1 for rrhf, 0.5 for pro") != 1 || strings.Contains(tr, "default -1") || !strings.Contains(tr, "bt (Bradley–Terry") {
		t.Fatalf("train --help:\n%s", tr)
	}
	gen := help("generate")
	if !strings.Contains(gen, `(default "\n\nHuman:")`) {
		t.Fatalf("generate --help does not show the stop string escaped:\n%s", gen)
	}
	if !strings.Contains(help("pretrain"), "sequences per step") || !strings.Contains(help("train-rm"), "chosen/rejected pairs per step") {
		t.Fatal("pretrain/train-rm --batch-size help")
	}
	if d := help("demo"); !strings.Contains(d, "(default 10)") || !strings.Contains(d, "(default 150)") || strings.Contains(d, "(0:") {
		t.Fatalf("demo --help shows sentinels:\n%s", d)
	}
	fail := func(want string, args ...string) {
		t.Helper()
		root := newRootCmd()
		root.SetOut(&bytes.Buffer{})
		root.SetArgs(args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v: got %v, want an error with %q", args, err, want)
		}
	}
	model := filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	fail("--out (out in the config): required", "align", "--model", model, "--prompts", "p.jsonl", "--blackbox-url", "http://127.0.0.1:9/v1", "--blackbox-model", "m")
	fail("--response", "score", "--model", model, "--prompt", "hi", "--response", "")
	hh := filepath.Join(t.TempDir(), "hh.jsonl")
	var b strings.Builder
	for i := 0; i < 40; i++ {
		line, _ := json.Marshal(map[string]string{"chosen": fmt.Sprintf("\n\nHuman: q%d\n\nAssistant: yes", i), "rejected": fmt.Sprintf("\n\nHuman: q%d\n\nAssistant: no", i)})
		b.Write(append(line, '\n'))
	}
	os.WriteFile(hh, []byte(b.String()), 0o644)
	out := string(run(t, "data", "split", "--hh", hh, "--out", t.TempDir()))
	if !strings.HasPrefix(out, "part") || !strings.Contains(out, "test") || strings.Contains(out, "map[") || !strings.Contains(out, "0 rows skipped") {
		t.Fatalf("data split printed:\n%s", out)
	}
}

// TestLossOptionsOfTheReferenceCode: --sft-norm sum makes the SFT term the summed token
// log-probability (the count of response tokens times the mean one), and --pro-temperature
// changes PRO's term for a ranking that comes with rewards.
func TestLossOptionsOfTheReferenceCode(t *testing.T) {
	model := filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	data := filepath.Join(t.TempDir(), "ranked.jsonl")
	os.WriteFile(data, []byte(`{"query": "\n\nHuman: Name a fruit.\n\nAssistant:", "responses": [" A car.", " An apple, or a pear.", " Rocks"], "scores": [0.2, 1.5, -1]}`+"\n"), 0o644)
	type report struct {
		PerPrompt []struct {
			RankTerm float64 `json:"rank_term"`
			SFTTerm  float64 `json:"sft_term"`
		} `json:"per_prompt"`
	}
	loss := func(extra ...string) report {
		var r report
		if err := json.Unmarshal(run(t, append([]string{"loss", "--model", model, "--ranked", data, "--loss", "pro", "--json"}, extra...)...), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	mean, sum, temp := loss(), loss("--sft-norm", "sum"), loss("--pro-temperature")
	n := sum.PerPrompt[0].SFTTerm / mean.PerPrompt[0].SFTTerm
	if n < 2 || math.Abs(n-math.Round(n)) > 1e-3 || sum.PerPrompt[0].RankTerm != mean.PerPrompt[0].RankTerm {
		t.Fatalf("sft sum %v vs mean %v: ratio %v is not a token count", sum.PerPrompt[0].SFTTerm, mean.PerPrompt[0].SFTTerm, n)
	}
	if math.Abs(temp.PerPrompt[0].RankTerm-mean.PerPrompt[0].RankTerm) < 1e-6 {
		t.Fatal("--pro-temperature left PRO's term unchanged for a ranking with rewards")
	}
	// By default each candidate is trained with the model's EOS at its end, as RRHF's code
	// appends it: one token more than with --response-end none.
	bare := loss("--sft-norm", "sum", "--response-end", "none")
	bareMean := loss("--response-end", "none")
	if k := bare.PerPrompt[0].SFTTerm / bareMean.PerPrompt[0].SFTTerm; math.Abs(n-k-1) > 1e-3 {
		t.Fatalf("the best candidate has %.3f tokens with the default end and %.3f with none; want one more", n, k)
	}
}

// A Bradley–Terry reward model is trained without an appended end by default (HF reads its
// reward at the last token that is not padding, and pad is often EOS).
func TestBTTrainsWithoutEnd(t *testing.T) {
	rm, ranked := tinyRM(t)
	loss := func(extra ...string) float64 {
		var r struct{ Loss float64 }
		if err := json.Unmarshal(run(t, append([]string{"loss", "--model", rm, "--ranked", ranked, "--loss", "bt", "--json"}, extra...)...), &r); err != nil {
			t.Fatal(err)
		}
		return r.Loss
	}
	def, none, eos := loss(), loss("--response-end", "none"), loss("--response-end", "eos")
	if def != none || def == eos {
		t.Fatalf("bt loss: default %v, none %v, eos %v; want the default to be none's", def, none, eos)
	}
}

// A reward model where a language model is wanted (and the reverse for bt) is refused with an
// error naming the model directory, before anything is written; these used to panic (score,
// train --loss bt) or babble (generate).
func TestWrongHeadIsRefused(t *testing.T) {
	lm := filepath.Join("..", "..", "testdata", "tiny-llama-metaspace")
	rm, ranked := tinyRM(t)
	out := filepath.Join(t.TempDir(), "out")
	for _, c := range []struct {
		args []string
		dir  string
		want string
	}{
		{[]string{"generate", "--model", rm, "--prompt", "Hi"}, "rm", "is a reward model"},
		{[]string{"score", "--model", rm, "--prompt", "Hi", "--response", " there"}, "rm", "is a reward model"},
		{[]string{"serve", "--model", rm, "--addr", "127.0.0.1:0"}, "rm", "is a reward model"},
		{[]string{"train", "--model", rm, "--data", ranked, "--loss", "pro", "--out", out, "--quiet"}, "rm", "is a reward model"},
		{[]string{"train", "--model", lm, "--data", ranked, "--loss", "bt", "--out", out, "--quiet"}, "tiny-llama-metaspace", "train-rm"},
	} {
		root := newRootCmd()
		root.SetOut(&bytes.Buffer{})
		root.SetArgs(c.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), c.dir) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error naming %s and saying %q", c.args[0], err, c.dir, c.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("a refused run wrote %s", out)
	}
}

// tinyRM trains a reward model for one step from the tiny test model, and writes a ranked file
// of one prompt and two candidates.
func tinyRM(t *testing.T) (rm, ranked string) {
	t.Helper()
	dir := t.TempDir()
	pairs := filepath.Join(dir, "pairs.jsonl")
	os.WriteFile(pairs, []byte(`{"chosen": "\n\nHuman: Name a fruit.\n\nAssistant: An apple.", "rejected": "\n\nHuman: Name a fruit.\n\nAssistant: A car."}`+"\n"), 0o644)
	rm = filepath.Join(dir, "rm")
	run(t, "train-rm", "--base", filepath.Join("..", "..", "testdata", "tiny-llama-metaspace"), "--data", pairs, "--eval-data", pairs, "--out", rm, "--max-steps", "1")
	ranked = filepath.Join(dir, "ranked.jsonl")
	os.WriteFile(ranked, []byte(`{"prompt": "\n\nHuman: Name a fruit.\n\nAssistant:", "candidates": [" An apple.", " A car."]}`+"\n"), 0o644)
	return rm, ranked
}

// A command run without a flag it needs names the flag before anything runs (an unset --out
// was "mkdir : no such file or directory", an unset --tokenizer "open tokenizer.json").
func TestRequiredFlagsNamed(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"data", "split", "--hh", "x.jsonl"}, `"out"`},
		{[]string{"data", "corpus"}, `"out"`},
		{[]string{"tokenizer", "train", "x.jsonl"}, `"out"`},
		{[]string{"pretrain", "--data", "x.jsonl"}, `"out", "tokenizer"`},
		{[]string{"train-rm", "--base", "x"}, `"data", "out"`},
		{[]string{"init-model", "--out", "x"}, `"tokenizer"`},
		{[]string{"train", "--model", "x"}, `"data", "out"`},
		{[]string{"loss"}, `"model", "ranked"`},
		{[]string{"eval"}, `"data"`},
		{[]string{"tokenize", "hi"}, `"model"`},
		{[]string{"score"}, `"model"`},
		{[]string{"generate"}, `"model"`},
		{[]string{"serve"}, `"model"`},
	} {
		root := newRootCmd()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(c.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "required flag(s) "+c.want+" not set") {
			t.Errorf("%v: %v, want the missing flags %s named", c.args, err, c.want)
		}
	}
}

// eval refuses settings it used to replace in silence (a negative --n meant all prompts,
// --max-new-tokens 0 meant 128).
func TestEvalRefusesBadSettings(t *testing.T) {
	for _, c := range [][]string{{"--n", "-1"}, {"--max-new-tokens", "0"}, {"--no-repeat-ngram", "-2"}} {
		root := newRootCmd()
		root.SetOut(&bytes.Buffer{})
		root.SetArgs(append([]string{"eval", "--model", "x", "--data", "x.jsonl"}, c...))
		if err := root.Execute(); err == nil || !strings.HasPrefix(err.Error(), c[0]+" "+c[1]) {
			t.Errorf("eval %v: %v, want an error naming the flag", c, err)
		}
	}
}
