package model

import (
	"encoding/json"
	"math/rand/v2"
	"strings"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// WithRewardHead returns a reward model built on m's body: the same config and weights as a
// ...ForSequenceClassification with one label, the LM head replaced by a fresh score head
// (normal, std 0.02, seeded), as reward models are started from a base model in RLHF practice.
func (m *Model) WithRewardHead(seed uint64) (*Model, error) {
	raw := map[string]any{}
	b, _ := json.Marshal(m.Config.Raw)
	json.Unmarshal(b, &raw)
	var archs []string
	for _, a := range m.Config.Architectures {
		archs = append(archs, strings.Replace(a, "ForCausalLM", "ForSequenceClassification", 1))
	}
	if len(archs) == 0 {
		archs = []string{"LlamaForSequenceClassification"}
	}
	raw["architectures"] = archs
	raw["num_labels"] = 1
	raw["id2label"] = map[string]string{"0": "LABEL_0"}
	raw["label2id"] = map[string]int{"LABEL_0": 0}
	if raw["pad_token_id"] == nil && len(m.Config.EOSTokenIDs) > 0 {
		raw["pad_token_id"] = m.Config.EOSTokenIDs[0] // transformers pools at the last non-pad token
	}
	cb, _ := json.Marshal(raw)
	cfg, err := hf.ParseConfig(cb)
	if err != nil {
		return nil, err
	}
	cfg.Raw = raw
	ts, err := m.Tensors()
	if err != nil {
		return nil, err
	}
	delete(ts, "lm_head.weight")
	D := m.Config.HiddenSize
	score := &hf.Tensor{Shape: []int{1, D}, Stored: hf.DTypeOf(cfg.DType), Data: make([]float32, D)}
	rng := rand.New(rand.NewPCG(seed, hashName("score.weight")))
	for i := range score.Data {
		score.Data[i] = float32(rng.NormFloat64() * 0.02)
	}
	ts["score.weight"] = score
	return New(m.Backend, cfg, m.Tokenizer, ts, "reward head on "+m.Config.ModelType)
}
