// Package generate samples completions from a white-box model: batched over prompts and
// samples, with a KV cache, greedy/temperature/top-k/top-p sampling done on the host, stop
// strings and EOS, reproducible from a seed.
package generate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/cyclealign/cyclealign/internal/model"
)

// DefaultStop ends an assistant turn in the HH dialogue format.
const DefaultStop = "\n\nHuman:"

// Options control sampling. The zero Temperature with Greedy false means 1.0.
type Options struct {
	N            int      // samples per prompt
	MaxNewTokens int      // per sample
	Greedy       bool     // argmax decoding
	Temperature  float64  // > 0
	TopK         int      // 0: off
	TopP         float64  // (0,1]; 1: off
	Seed         uint64   // same seed, same prompts: same completions
	Stop         []string // cut the completion before the first of these
	IgnoreEOS    bool     // keep going past EOS (as HF's reference greedy runs do)
	// TruncatePrompt drops a too-long prompt's oldest tokens (after the first) so prompt and
	// MaxNewTokens fit the model's positions; without it such a prompt is an error.
	TruncatePrompt bool
	NoCache        bool // recompute the window each step (benchmark baseline)
	MaxRows        int  // rows per decoding batch (0: 64)
}

// Defaults returns METHOD.md's sampling defaults: temperature 1.0, top-p 0.9, 128 new tokens,
// stop at the next "\n\nHuman:".
func Defaults() Options {
	return Options{N: 1, MaxNewTokens: 128, Temperature: 1, TopP: 0.9, Stop: []string{DefaultStop}, TruncatePrompt: true}
}

// Completion is one generated response.
type Completion struct {
	Text         string `json:"text"`
	IDs          []int  `json:"ids"`
	FinishReason string `json:"finish_reason"` // "stop" (EOS or stop string) or "length"
}

func (o *Options) check() error {
	if o.N < 1 {
		return fmt.Errorf("n must be at least 1, got %d", o.N)
	}
	if o.MaxNewTokens < 1 {
		return fmt.Errorf("max-new-tokens must be at least 1, got %d", o.MaxNewTokens)
	}
	if !o.Greedy && o.Temperature <= 0 {
		return fmt.Errorf("temperature must be > 0 (or use greedy), got %g", o.Temperature)
	}
	if o.TopP <= 0 || o.TopP > 1 {
		return fmt.Errorf("top-p must be in (0, 1], got %g", o.TopP)
	}
	if o.TopK < 0 {
		return fmt.Errorf("top-k must be >= 0, got %d", o.TopK)
	}
	return nil
}

// Text generates opt.N completions for each prompt (encoded with special tokens).
func Text(ctx context.Context, m *model.Model, prompts []string, opt Options) ([][]Completion, error) {
	ids := make([][]int, len(prompts))
	for i, p := range prompts {
		ids[i] = m.Tokenizer.Encode(p, true)
	}
	return IDs(ctx, m, ids, opt)
}

// IDs generates opt.N completions for each tokenized prompt; out[i][j] is sample j of prompt i.
func IDs(ctx context.Context, m *model.Model, prompts [][]int, opt Options) ([][]Completion, error) {
	if opt.TopP == 0 {
		opt.TopP = 1
	}
	if opt.Temperature == 0 && !opt.Greedy {
		opt.Temperature = 1
	}
	if err := opt.check(); err != nil {
		return nil, err
	}
	maxRows := opt.MaxRows
	if maxRows <= 0 {
		maxRows = 64
	}
	if opt.TruncatePrompt {
		room := m.Config.MaxPositions - opt.MaxNewTokens
		if room < 2 {
			return nil, fmt.Errorf("max-new-tokens %d leaves no room for a prompt in %d positions", opt.MaxNewTokens, m.Config.MaxPositions)
		}
		fitted := make([][]int, len(prompts))
		for i, p := range prompts {
			fitted[i], _ = model.FitContext(p, nil, room)
		}
		prompts = fitted
	}
	type row struct{ prompt, sample int }
	var rows []row
	for i := range prompts {
		for j := 0; j < opt.N; j++ {
			rows = append(rows, row{i, j})
		}
	}
	out := make([][]Completion, len(prompts))
	for i := range out {
		out[i] = make([]Completion, opt.N)
	}
	for start := 0; start < len(rows); start += maxRows {
		chunk := rows[start:min(start+maxRows, len(rows))]
		ps := make([][]int, len(chunk))
		rngs := make([]*rand.Rand, len(chunk))
		for k, r := range chunk {
			ps[k] = prompts[r.prompt]
			// One stream per (prompt, sample), so results do not depend on batching.
			rngs[k] = rand.New(rand.NewPCG(opt.Seed, uint64(r.prompt)<<20|uint64(r.sample)))
		}
		comps, err := decodeBatch(ctx, m, ps, rngs, opt)
		if err != nil {
			return nil, err
		}
		for k, r := range chunk {
			out[r.prompt][r.sample] = comps[k]
		}
	}
	return out, nil
}

func decodeBatch(ctx context.Context, m *model.Model, prompts [][]int, rngs []*rand.Rand, opt Options) ([]Completion, error) {
	dec, err := m.NewDecoder(prompts, opt.MaxNewTokens, !opt.NoCache)
	if err != nil {
		return nil, err
	}
	logits, err := dec.Start()
	if err != nil {
		return nil, err
	}
	eos := map[int]bool{}
	if !opt.IgnoreEOS {
		for _, id := range m.Config.EOSTokenIDs {
			eos[id] = true
		}
	}
	n := len(prompts)
	comps := make([]Completion, n)
	done := make([]bool, n)
	next := make([]int, n)
	remaining := n
	for step := 0; step < opt.MaxNewTokens && remaining > 0; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for r := 0; r < n; r++ {
			if done[r] {
				next[r] = 0
				continue
			}
			tok := Sample(logits[r], rngs[r], opt)
			next[r] = tok
			if eos[tok] {
				done[r], comps[r].FinishReason = true, "stop"
				remaining--
				continue
			}
			comps[r].IDs = append(comps[r].IDs, tok)
			if cutStop(m, &comps[r], opt.Stop) {
				done[r], comps[r].FinishReason = true, "stop"
				remaining--
			}
		}
		if remaining == 0 || step == opt.MaxNewTokens-1 {
			break
		}
		if logits, err = dec.Step(next); err != nil {
			return nil, err
		}
	}
	for r := range comps {
		if comps[r].FinishReason == "" {
			comps[r].FinishReason = "length"
		}
		if comps[r].IDs == nil {
			comps[r].IDs = []int{}
		}
		if comps[r].Text == "" && m.Tokenizer != nil {
			comps[r].Text = m.Tokenizer.Decode(comps[r].IDs, true)
		}
	}
	return comps, nil
}

// cutStop ends a completion at the first stop string: the text stops before it and the ids
// keep the longest prefix whose text does not reach into it.
func cutStop(m *model.Model, c *Completion, stops []string) bool {
	if len(stops) == 0 || m.Tokenizer == nil {
		return false
	}
	text := m.Tokenizer.Decode(c.IDs, true)
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return false
	}
	c.Text = text[:cut]
	for len(c.IDs) > 0 && len(m.Tokenizer.Decode(c.IDs, true)) > cut {
		c.IDs = c.IDs[:len(c.IDs)-1]
	}
	return true
}

// Sample draws a token from logits under the options; greedy takes the first maximum.
func Sample(logits []float32, rng *rand.Rand, opt Options) int {
	if opt.Greedy {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if opt.TopK > 0 && opt.TopK < len(idx) {
		idx = idx[:opt.TopK]
	}
	top := float64(logits[idx[0]])
	probs := make([]float64, len(idx))
	sum := 0.0
	for i, id := range idx {
		probs[i] = math.Exp((float64(logits[id]) - top) / opt.Temperature)
		sum += probs[i]
	}
	// Keep the smallest prefix of the sorted tokens whose mass reaches top-p.
	keep := len(idx)
	if opt.TopP < 1 {
		cum := 0.0
		for i, p := range probs {
			cum += p / sum
			if cum >= opt.TopP {
				keep = i + 1
				break
			}
		}
	}
	mass := 0.0
	for _, p := range probs[:keep] {
		mass += p
	}
	u := rng.Float64() * mass
	for i, p := range probs[:keep] {
		u -= p
		if u < 0 {
			return idx[i]
		}
	}
	return idx[keep-1]
}
