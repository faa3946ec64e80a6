package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/backends"
)

var testBackend backends.Backend

func TestMain(m *testing.M) {
	b, err := NewBackend()
	if err != nil {
		panic(err)
	}
	testBackend = b
	os.Exit(m.Run())
}

type refPair struct {
	Prompt        string    `json:"prompt"`
	Response      string    `json:"response"`
	PromptIDs     []int     `json:"prompt_ids"`
	ResponseIDs   []int     `json:"response_ids"`
	TokenLogProbs []float64 `json:"response_token_logprobs"`
	Sum           float64   `json:"sum"`
	Mean          float64   `json:"mean"`
	LastLogits16  []float64 `json:"last_logits_first16"`
	ArgmaxPerPos  []int     `json:"argmax_per_position"`
}

type refGenerate struct {
	PromptIDs []int `json:"prompt_ids"`
	Greedy16  []int `json:"greedy16"`
}

type reference struct {
	Pairs    []refPair     `json:"pairs"`
	Generate []refGenerate `json:"generate"`
}

var refModels = []string{"tiny-gpt2-bytelevel", "tiny-llama-metaspace"}

func refDir(name string) string { return filepath.Join("..", "..", "testdata", name) }

func loadRef(t *testing.T, name string) (*Model, reference) {
	t.Helper()
	m, err := Load(testBackend, refDir(name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(refDir(name), "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Pairs) == 0 || len(ref.Generate) == 0 {
		t.Fatal("empty reference")
	}
	return m, ref
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
