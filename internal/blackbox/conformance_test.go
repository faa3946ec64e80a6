package blackbox

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/model"
)

// conformance is what every Ranker must do.
func conformance(t *testing.T, r Ranker) {
	t.Helper()
	ctx := context.Background()
	req := Request{Prompt: "\n\nHuman: hello\n\nAssistant:", Candidates: cands, Demos: []Demo{demo()}, Seed: 4}
	a, err := r.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(a.Ranking)
	sort.Ints(got)
	if !slices.Equal(got, []int{0, 1, 2, 3}) || a.Unranked {
		t.Fatalf("ranking %v is not a permutation of the 4 candidates", a.Ranking)
	}
	b, err := r.Rank(ctx, req)
	if err != nil || !slices.Equal(a.Ranking, b.Ranking) {
		t.Fatalf("same request, different rankings: %v vs %v (%v)", a.Ranking, b.Ranking, err)
	}
	if _, err := r.Rank(ctx, Request{Prompt: "p", Candidates: cands[:1]}); err == nil {
		t.Fatal("ranked a single candidate")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Rank(cctx, Request{Prompt: "other prompt", Candidates: cands, Seed: 99}); err == nil {
		t.Fatal("ranked under a cancelled context")
	}
	if r.Describe() == "" {
		t.Fatal("no description")
	}
}

// tinyRewardModel writes a random-init LlamaForSequenceClassification with one label.
func tinyRewardModel(t *testing.T) *model.Model {
	t.Helper()
	raw := map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "model_type": "llama",
		"vocab_size": 600, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 2, "max_position_embeddings": 256, "num_labels": 1, "pad_token_id": 0, "dtype": "float32"}
	b, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := model.InitTensors(cfg, 0.3, 7)
	if err != nil {
		t.Fatal(err)
	}
	if s := ts["score.weight"]; s == nil || !slices.Equal(s.Shape, []int{1, 32}) {
		t.Fatalf("score head: %v", s)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	tok, _ := os.ReadFile(filepath.Join("..", "..", "testdata", "tiny-llama-metaspace", "tokenizer.json"))
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), tok, 0o644)
	if err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	be, _ := model.NewBackend()
	m, err := model.Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRankersConform(t *testing.T) {
	t.Run("llm", func(t *testing.T) {
		s := llmtest.New(llmtest.RankBy(shorterFirst))
		defer s.Close()
		conformance(t, newTestLLM(t, s, nil))
	})
	t.Run("reward-model", func(t *testing.T) {
		rm := &RewardModel{M: tinyRewardModel(t), Name: "tiny"}
		ranker := &Judge{Scorer: rm}
		conformance(t, ranker)
		if d := ranker.Describe(); strings.Count(d, "ignores demonstrations") != 1 || !strings.Contains(d, "reward model (tiny)") {
			t.Fatalf("description %q: want the reward model named and \"ignores demonstrations\" said once", d)
		}
		// The ranking is the rewards sorted, and rewards are the score head at the last token.
		res, err := ranker.Rank(context.Background(), Request{Prompt: "q", Candidates: cands})
		if err != nil {
			t.Fatal(err)
		}
		scores, _ := rm.Scores(context.Background(), "q", cands)
		if !slices.Equal(res.Rewards, scores) {
			t.Fatalf("result rewards %v, want the candidates' scores %v (for PRO's temperature)", res.Rewards, scores)
		}
		for i := 1; i < len(res.Ranking); i++ {
			if scores[res.Ranking[i]] > scores[res.Ranking[i-1]] {
				t.Fatalf("ranking %v does not follow rewards %v", res.Ranking, scores)
			}
		}
		ids := append(rm.M.Tokenizer.Encode("q", true), rm.M.Tokenizer.Encode(cands[2], false)...)
		logits, _ := rm.M.Logits(context.Background(), [][]int{ids})
		if float64(logits[0][len(ids)-1][0]) != scores[2] || len(logits[0][0]) != 1 {
			t.Fatalf("reward %v, score head at last token %v", scores[2], logits[0][len(ids)-1])
		}
	})
}
