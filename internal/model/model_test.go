package model

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
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

func TestScoreMatchesHF(t *testing.T) {
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			m, ref := loadRef(t, name)
			var prompts, responses []string
			for _, p := range ref.Pairs {
				prompts = append(prompts, p.Prompt)
				responses = append(responses, p.Response)
			}
			scores, err := m.ScoreText(context.Background(), prompts, responses)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range ref.Pairs {
				s := scores[i]
				if !slices.Equal(s.PromptIDs, p.PromptIDs) || !slices.Equal(s.ResponseIDs, p.ResponseIDs) {
					t.Fatalf("pair %d ids differ: %v %v vs %v %v", i, s.PromptIDs, s.ResponseIDs, p.PromptIDs, p.ResponseIDs)
				}
				for j, v := range p.TokenLogProbs {
					if !near(s.TokenLogProbs[j], v, 1e-4) {
						t.Errorf("pair %d token %d: logprob %.6f, HF %.6f", i, j, s.TokenLogProbs[j], v)
					}
				}
				if !near(s.Sum, p.Sum, 1e-4*float64(len(p.TokenLogProbs))) || !near(s.Mean, p.Mean, 1e-4) {
					t.Errorf("pair %d: sum %.6f mean %.6f, HF %.6f %.6f", i, s.Sum, s.Mean, p.Sum, p.Mean)
				}
			}
		})
	}
}

func TestLogitsMatchHF(t *testing.T) {
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			m, ref := loadRef(t, name)
			var seqs [][]int
			for _, p := range ref.Pairs {
				seqs = append(seqs, append(append([]int(nil), p.PromptIDs...), p.ResponseIDs...))
			}
			logits, err := m.Logits(context.Background(), seqs)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range ref.Pairs {
				last := logits[i][len(seqs[i])-1]
				for j, v := range p.LastLogits16 {
					if !near(float64(last[j]), v, 1e-4) {
						t.Errorf("pair %d logit %d: %.6f, HF %.6f", i, j, last[j], v)
					}
				}
				for pos, want := range p.ArgmaxPerPos {
					if got := argmax(logits[i][pos]); got != want {
						t.Errorf("pair %d position %d: argmax %d, HF %d", i, pos, got, want)
					}
				}
			}
		})
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
