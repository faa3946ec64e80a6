package model

import (
	"context"
	"fmt"
	"sort"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// MaxBatchRows bounds the rows of one scoring execution; more sequences are split.
const MaxBatchRows = 16

// bucket is the padded width of a batch whose longest sequence has n tokens (see Bucket).
func (m *Model) bucket(n int) (int, error) {
	if n > m.Config.MaxPositions {
		return 0, fmt.Errorf("sequence of %d tokens exceeds the model's %d positions", n, m.Config.MaxPositions)
	}
	return m.Bucket(n), nil
}

// Bucket rounds a sequence length up to the width graphs are built for, at most the model's
// positions, so a run builds a bounded number of graphs.
func (m *Model) Bucket(n int) int { return min(m.shapeLen(n, 16), m.Config.MaxPositions) }

// shapeLen rounds a length up for a graph's shape. On the pure-Go backend building a graph is
// cheap and padding costs compute, so lengths round to a multiple of cpu (1: exact). Elsewhere
// (XLA, m.coarse) every new shape is a compile of 10-70 s while padding is nearly free on a
// GPU, so lengths round up to a power of two from 64: a 2048-position model then builds at
// most 6 widths per graph.
func (m *Model) shapeLen(n, cpu int) int {
	if !m.coarse {
		return (n + cpu - 1) / cpu * cpu
	}
	p := 64
	for p < n {
		p *= 2
	}
	return p
}

// allowed reports whether query position q may attend to key position k of a row whose real
// tokens start at pad. A query on padding attends to itself only, so no softmax row is empty.
func (m *Model) allowed(q, k, pad int) bool {
	if k == q {
		return true
	}
	if k < pad || k > q {
		return false
	}
	return m.Config.SlidingWindow <= 0 || q-k < m.Config.SlidingWindow
}

// RightPadded lays sequences out as a right-padded batch of width T: tokens, positions
// [B,T] and a causal mask [B,T,T]. Padding ids are 0; they are never attended to by real tokens.
func (m *Model) RightPadded(seqs [][]int, T int) (tokens, positions, mask *tensors.Tensor) {
	B := len(seqs)
	tok := make([]int32, B*T)
	pos := make([]int32, B*T)
	msk := make([]bool, B*T*T)
	for b, s := range seqs {
		for t := 0; t < T; t++ {
			if t < len(s) {
				tok[b*T+t] = int32(s[t])
			}
			pos[b*T+t] = int32(t)
			for k := 0; k <= t; k++ {
				msk[(b*T+t)*T+k] = m.allowed(t, k, 0)
			}
		}
	}
	return tensors.FromFlatDataAndDimensions(tok, B, T), tensors.FromFlatDataAndDimensions(pos, B, T),
		tensors.FromFlatDataAndDimensions(msk, B, T, T)
}

// batches groups sequence indices by length into batches of at most MaxBatchRows.
func batches(seqs [][]int) [][]int {
	idx := make([]int, len(seqs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return len(seqs[idx[a]]) > len(seqs[idx[b]]) })
	var out [][]int
	for len(idx) > 0 {
		n := min(MaxBatchRows, len(idx))
		out = append(out, idx[:n])
		idx = idx[n:]
	}
	return out
}

// eachBatch calls fn on groups of sequences of similar length (indices into seqs and the
// sequences themselves), with the bucketed width T they are padded to.
func (m *Model) eachBatch(ctx context.Context, seqs [][]int, minLen int, fn func(group []int, rows [][]int, T int) error) error {
	for _, group := range batches(seqs) {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows := make([][]int, len(group))
		for i, j := range group {
			if len(seqs[j]) < minLen {
				return fmt.Errorf("sequence %d has %d tokens; at least %d needed", j, len(seqs[j]), minLen)
			}
			rows[i] = seqs[j]
		}
		T, err := m.bucket(len(rows[0]))
		if err != nil {
			return err
		}
		if err := fn(group, rows, T); err != nil {
			return err
		}
	}
	return nil
}

// LogProbs returns, for each sequence s, lp[t] = log p(s[t+1] | s[:t+1]) for t < len(s)-1.
// Results do not depend on which sequences share a batch.
func (m *Model) LogProbs(ctx context.Context, seqs [][]int) ([][]float32, error) {
	if err := m.CheckLanguageModel(); err != nil {
		return nil, err
	}
	return m.eng.logProbs(ctx, seqs)
}

// Logits returns the logits [len(s)][V] of every position of each sequence (V is num_labels
// for a sequence-classification head).
func (m *Model) Logits(ctx context.Context, seqs [][]int) ([][][]float32, error) {
	return m.eng.logits(ctx, seqs)
}

// TrainForward runs seqs through the model for training, keeping what the backward pass needs.
// It returns, per sequence, log p(s[t+1] | s[:t+1]) for t < len(s)-1 (for a score head: the
// head's first output at each position instead).
func (m *Model) TrainForward(seqs [][]int, drop Dropout) (TrainPass, [][]float32, error) {
	return m.eng.trainForward(seqs, drop)
}

// Score is the log-probability of a response given a prompt.
type Score struct {
	PromptIDs     []int     `json:"prompt_ids"`
	ResponseIDs   []int     `json:"response_ids"`
	TokenLogProbs []float64 `json:"token_logprobs"`
	Sum           float64   `json:"sum"`
	Mean          float64   `json:"mean"` // length-normalised: Sum / len(ResponseIDs)
}

// ScoreIDs scores token-level (prompt, response) pairs in batches.
func (m *Model) ScoreIDs(ctx context.Context, prompts, responses [][]int) ([]Score, error) {
	if len(prompts) != len(responses) {
		return nil, fmt.Errorf("%d prompts but %d responses", len(prompts), len(responses))
	}
	seqs := make([][]int, len(prompts))
	for i := range prompts {
		if len(prompts[i]) == 0 {
			return nil, fmt.Errorf("pair %d: empty prompt (a response's first token needs context)", i)
		}
		if len(responses[i]) == 0 {
			return nil, fmt.Errorf("pair %d: empty response", i)
		}
		seqs[i] = append(append([]int(nil), prompts[i]...), responses[i]...)
	}
	lps, err := m.LogProbs(ctx, seqs)
	if err != nil {
		return nil, err
	}
	out := make([]Score, len(seqs))
	for i := range seqs {
		p := len(prompts[i])
		s := Score{PromptIDs: prompts[i], ResponseIDs: responses[i]}
		for t := range responses[i] {
			v := float64(lps[i][p-1+t])
			s.TokenLogProbs = append(s.TokenLogProbs, v)
			s.Sum += v
		}
		s.Mean = s.Sum / float64(len(responses[i]))
		out[i] = s
	}
	return out, nil
}

// ScoreText tokenizes prompts (with special tokens) and responses (without) and scores them.
func (m *Model) ScoreText(ctx context.Context, prompts, responses []string) ([]Score, error) {
	if len(prompts) != len(responses) {
		return nil, fmt.Errorf("%d prompts but %d responses", len(prompts), len(responses))
	}
	p := make([][]int, len(prompts))
	r := make([][]int, len(prompts))
	for i := range prompts {
		p[i] = m.Tokenizer.Encode(prompts[i], true)
		r[i] = m.Tokenizer.Encode(responses[i], false)
	}
	return m.ScoreIDs(ctx, p, r)
}

// Name is the model's directory, for messages ("the model" when it was built in memory).
func (m *Model) Name() string {
	if m.Dir == "" {
		return "the model"
	}
	return m.Dir
}

// CheckLanguageModel refuses a reward model where token probabilities are wanted: its head gives
// num_labels scores, not a distribution over the vocabulary.
func (m *Model) CheckLanguageModel() error {
	if m.Config.NumLabels > 0 {
		return fmt.Errorf("%s is a reward model (num_labels %d, a ...ForSequenceClassification): it scores replies, and has no language-model head to score tokens or generate with", m.Name(), m.Config.NumLabels)
	}
	return nil
}

// Rewards returns the scalar reward of each sequence: the first score-head output at its last
// token, as transformers' ...ForSequenceClassification pools it.
func (m *Model) Rewards(ctx context.Context, seqs [][]int) ([]float64, error) {
	if m.Config.NumLabels < 1 {
		return nil, fmt.Errorf("%s has no score head: a reward model's config.json architectures name a ...ForSequenceClassification (cyclealign train-rm makes one)", m.Name())
	}
	logits, err := m.Logits(ctx, seqs)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(seqs))
	for i, l := range logits {
		out[i] = float64(l[len(l)-1][0])
	}
	return out, nil
}

// FitContext shortens a prompt and response to maxLen tokens together: the response is cut to
// half of maxLen at most, then the prompt loses its oldest tokens after the first (the BOS), so
// the latest turns, which the response answers, survive.
func FitContext(prompt, resp []int, maxLen int) ([]int, []int) {
	if len(prompt)+len(resp) <= maxLen {
		return prompt, resp
	}
	if len(resp) > maxLen/2 {
		resp = resp[:max(maxLen/2, maxLen-len(prompt))]
	}
	if over := len(prompt) + len(resp) - maxLen; over > 0 && len(prompt) > 1 {
		prompt = append([]int{prompt[0]}, prompt[1+min(over, len(prompt)-2):]...)
	}
	return prompt, resp
}
