// Package generate samples completions from a white-box model: batched over prompts and
// samples, with a KV cache, greedy/temperature/top-k/top-p sampling done on the host, stop
// strings and EOS, reproducible from a seed.
package generate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/cyclealign/cyclealign/internal/cpu"
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
	// Logprobs records each generated token's log-probability (Completion.Logprobs), a
	// log-softmax over the vocabulary a token: only when asked, as the OpenAI API does.
	Logprobs    bool
	TopLogprobs int // also keep the k most likely tokens at each step (0: none)
	// NoRepeatNGram > 0 forbids a token that would repeat an n-gram of the prompt and the
	// completion so far (HF's no_repeat_ngram_size), except the tokens that continue a Stop
	// string or are the chat template's turn end: the HH format's "\n\nHuman:" is in every
	// prompt, ChatML's <|im_end|> ends every message, and the rule would otherwise forbid
	// replies to end.
	NoRepeatNGram int
	// Progress, when set, is told after each decoding batch how many rows (prompts x N) of
	// how many are finished.
	Progress func(done, total int)
}

// Defaults returns docs/METHOD.md's sampling defaults: temperature 1.0, top-p 0.9, 128 new tokens,
// stop at the next "\n\nHuman:".
func Defaults() Options {
	return Options{N: 1, MaxNewTokens: 128, Temperature: 1, TopP: 0.9, Stop: []string{DefaultStop}, TruncatePrompt: true}
}

// Completion is one generated response.
type Completion struct {
	Text         string    `json:"text"`
	IDs          []int     `json:"ids"`
	FinishReason string    `json:"finish_reason"` // "stop" (EOS or stop string) or "length"
	Logprobs     []float64 `json:"-"`             // with Options.Logprobs: each generated token's log-probability
	Top          [][]Alt   `json:"-"`             // with Options.TopLogprobs: the likeliest tokens at each step
}

// Alt is a token and its log-probability.
type Alt struct {
	ID      int
	Logprob float64
}

// TopK returns the k likeliest tokens of logits with their log-probabilities, likeliest first.
func TopK(logits []float32, k int) []Alt {
	k = min(k, len(logits))
	idx := make([]int, 0, k+1)
	for i, v := range logits { // insertion into a short sorted list: k is small
		if len(idx) == k && v <= logits[idx[k-1]] {
			continue
		}
		j := sort.Search(len(idx), func(j int) bool { return logits[idx[j]] < v })
		idx = append(idx, 0)
		copy(idx[j+1:], idx[j:])
		idx[j] = i
		if len(idx) > k {
			idx = idx[:k]
		}
	}
	lse := cpu.LogSumExp(logits)
	out := make([]Alt, len(idx))
	for i, id := range idx {
		out[i] = Alt{id, float64(logits[id]) - lse}
	}
	return out
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
	if o.NoRepeatNGram < 0 {
		return fmt.Errorf("no-repeat n-gram size must be >= 0, got %d", o.NoRepeatNGram)
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
		batch := make([]Row, len(chunk))
		for k, r := range chunk {
			// One stream per (prompt, sample), so results do not depend on batching.
			batch[k] = Row{Prompt: prompts[r.prompt], Opt: opt, RNG: rand.New(rand.NewPCG(opt.Seed, uint64(r.prompt)<<20|uint64(r.sample)))}
		}
		comps, err := Rows(ctx, m, batch)
		if err != nil {
			return nil, err
		}
		for k, r := range chunk {
			out[r.prompt][r.sample] = comps[k]
		}
		if opt.Progress != nil {
			opt.Progress(start+len(chunk), len(rows))
		}
	}
	return out, nil
}

// Row is one sequence to continue with its own sampling options (Opt.N and Opt.MaxRows are
// not used) and its own RNG (rows draw their tokens in parallel, so rows sharing one draw
// one after the other). OnToken, when set, is called after each token is added (for streaming). Ctx,
// when set, belongs to the row alone: once it is done the row stops (finish reason
// "cancelled") and OnToken is not called again, while the other rows of the batch go on.
type Row struct {
	Prompt  []int
	Opt     Options
	RNG     *rand.Rand
	OnToken func(c *Completion)
	Ctx     context.Context
}

// Cancelled is the finish reason of a row whose own context ended.
const Cancelled = "cancelled"

// Check reports whether a row can be decoded on m: valid options, a non-empty prompt, and
// the prompt plus its own token budget within the model's positions.
func (r Row) Check(m *model.Model) error {
	if err := r.Opt.check(); err != nil {
		return err
	}
	if len(r.Prompt) == 0 {
		return fmt.Errorf("empty prompt")
	}
	if len(r.Prompt)+r.Opt.MaxNewTokens > m.Config.MaxPositions {
		return fmt.Errorf("prompt (%d tokens) plus max new tokens (%d) exceeds the model's %d positions", len(r.Prompt), r.Opt.MaxNewTokens, m.Config.MaxPositions)
	}
	return nil
}

// Rows decodes rows together in one KV-cached batch, each until its EOS, stop string, token
// budget or the end of its own context. The batch stops early when every row is done.
func Rows(ctx context.Context, m *model.Model, rows []Row) ([]Completion, error) {
	budgets := make([]int, len(rows))
	prompts := make([][]int, len(rows))
	for i, r := range rows {
		if err := r.Opt.check(); err != nil {
			return nil, err
		}
		budgets[i] = r.Opt.MaxNewTokens
		prompts[i] = r.Prompt
	}
	dec, err := m.NewRowDecoder(prompts, budgets, !rows[0].Opt.NoCache)
	if err != nil {
		return nil, err
	}
	logits, err := dec.Start()
	if err != nil {
		return nil, err
	}
	eos := map[int]bool{}
	for _, id := range m.EndIDs() {
		eos[id] = true
	}
	// Each row's stop strings as tokens, which its n-gram ban leaves open (only rows with one).
	stopIDs := make([][][]int, len(rows))
	for r, row := range rows {
		for _, s := range row.Opt.Stop {
			if row.Opt.NoRepeatNGram > 0 && s != "" && m.Tokenizer != nil {
				stopIDs[r] = append(stopIDs[r], m.Tokenizer.Encode(s, false))
			}
		}
	}
	n := len(rows)
	comps := make([]Completion, n)
	done := make([]bool, n)
	next := make([]int, n)
	lps := make([]float64, n)
	samplers := make([]sampler, n)
	// A vocabulary-sized sort and softmax a row (milliseconds for a 150k-word vocabulary) are
	// drawn on all cores, unless rows share an RNG (their draws then keep the rows' order).
	shared := map[*rand.Rand]bool{}
	parallel := true
	for _, r := range rows {
		parallel = parallel && !shared[r.RNG]
		shared[r.RNG] = true
	}
	draw := func(r int) {
		opt := rows[r].Opt
		if opt.NoRepeatNGram > 0 {
			banRepeats(logits[r], append(append([]int(nil), rows[r].Prompt...), comps[r].IDs...), opt.NoRepeatNGram,
				append(stopContinuations(comps[r].IDs, stopIDs[r]), m.TurnEndIDs()...))
		}
		next[r] = samplers[r].sample(logits[r], rows[r].RNG, opt)
		if opt.Logprobs {
			lps[r] = logProb(logits[r], next[r])
		}
	}
	remaining := n
	for step := 0; remaining > 0; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for r := 0; r < n; r++ {
			if !done[r] && rows[r].Ctx != nil && rows[r].Ctx.Err() != nil {
				done[r], comps[r].FinishReason = true, Cancelled
				remaining--
			}
			if done[r] {
				next[r] = -1 // finished: the decoder may skip the row
			} else if !parallel {
				draw(r)
			}
		}
		if parallel {
			cpu.Parallel(n, func(lo, hi int) {
				for r := lo; r < hi; r++ {
					if !done[r] {
						draw(r)
					}
				}
			})
		}
		for r := 0; r < n; r++ {
			if done[r] {
				continue
			}
			opt := rows[r].Opt
			tok := next[r]
			finish := ""
			if eos[tok] && !opt.IgnoreEOS {
				finish = "stop"
			} else {
				comps[r].IDs = append(comps[r].IDs, tok)
				if opt.Logprobs {
					comps[r].Logprobs = append(comps[r].Logprobs, lps[r])
				}
				if opt.TopLogprobs > 0 {
					comps[r].Top = append(comps[r].Top, TopK(logits[r], opt.TopLogprobs))
				}
				switch {
				case cutStop(m, &comps[r], opt.Stop):
					finish = "stop"
				case len(comps[r].IDs) >= opt.MaxNewTokens:
					finish = "length"
				}
			}
			if rows[r].OnToken != nil && (finish == "" || comps[r].Text == "") {
				rows[r].OnToken(&comps[r])
			}
			if finish != "" {
				done[r], comps[r].FinishReason = true, finish
				remaining--
			}
		}
		if remaining == 0 {
			break
		}
		if logits, err = dec.Step(next); err != nil {
			return nil, err
		}
	}
	for r := range comps {
		if comps[r].IDs == nil {
			comps[r].IDs = []int{}
		}
		if comps[r].Text == "" && m.Tokenizer != nil {
			comps[r].Text = m.Tokenizer.Decode(comps[r].IDs, true)
		}
	}
	return comps, nil
}

// banRepeats sets to -inf the logit of every token that would complete an n-gram already in
// ids.
func banRepeats(logits []float32, ids []int, n int, keep []int) {
	if len(ids) < n-1 {
		return
	}
	tail := ids[len(ids)-(n-1):]
	for i := 0; i+n-1 < len(ids); i++ {
		if t := ids[i+n-1]; slices.Equal(ids[i:i+n-1], tail) && !slices.Contains(keep, t) {
			logits[t] = float32(math.Inf(-1))
		}
	}
}

// stopContinuations are the tokens that would start a stop sequence or carry on one the
// completion has begun.
func stopContinuations(ids []int, stops [][]int) []int {
	var out []int
	for _, s := range stops {
		for k := 0; k < len(s) && k <= len(ids); k++ {
			if slices.Equal(ids[len(ids)-k:], s[:k]) {
				out = append(out, s[k])
			}
		}
	}
	return out
}

// logProb is log softmax(logits)[tok], in float64.
func logProb(logits []float32, tok int) float64 { return cpu.LogSoftmaxAt(logits, tok) }

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
	return new(sampler).sample(logits, rng, opt)
}

// sampler holds the vocabulary-sized buffers of drawing a token, kept by a row from one token
// to the next: allocated at every token they cost more than the sort itself.
type sampler struct {
	keys, tmpK []uint32
	idx, tmpI  []int32
	probs      []float64
}

func (s *sampler) sample(logits []float32, rng *rand.Rand, opt Options) int {
	if opt.Greedy {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	idx := s.sortedDescending(logits)
	if opt.TopK > 0 && opt.TopK < len(idx) {
		idx = idx[:opt.TopK]
	}
	top := float64(logits[idx[0]])
	probs := grow(&s.probs, len(idx))
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
			return int(idx[i])
		}
	}
	return int(idx[keep-1])
}

// grow returns *buf resliced to n, allocating it again only when it is too short.
func grow[T any](buf *[]T, n int) []T {
	if cap(*buf) < n {
		*buf = make([]T, n)
	}
	return (*buf)[:n]
}

// sortedDescending returns the token ids ordered by logit, largest first, ties in id order
// (a stable sort), in the sampler's buffer. It is a least-significant-digit radix sort on the
// logits' bits, 11 bits a pass, the three passes' digits counted in one sweep: a 151,936-word
// vocabulary took a comparison sort 20-30 ms a token, and sampling 16 rows of a 0.5B model
// spent more time sorting than the model spent computing.
func (s *sampler) sortedDescending(logits []float32) []int32 {
	n := len(logits)
	keys, idx := grow(&s.keys, n), grow(&s.idx, n)
	tmpK, tmpI := grow(&s.tmpK, n), grow(&s.tmpI, n)
	const bits, mask = 11, 1<<11 - 1
	var count [3][1 << bits]int
	// Keys in ascending order of ^key = descending order of the float: flip the sign bit of
	// positives, every bit of negatives (IEEE order as unsigned integers), then invert.
	// (NaN has no place in a comparison sort's order either; logits have none.)
	for i, v := range logits {
		b := math.Float32bits(v)
		if b == 1<<31 { // -0 ties with 0, as a comparison sees them
			b = 0
		}
		if b>>31 == 1 {
			b = ^b
		} else {
			b |= 1 << 31
		}
		k := ^b
		keys[i], idx[i] = k, int32(i)
		count[0][k&mask]++
		count[1][k>>bits&mask]++
		count[2][k>>(2*bits)&mask]++
	}
	for pass := range count {
		shift := uint(pass * bits)
		pos := 0
		for d, c := range count[pass] {
			count[pass][d], pos = pos, pos+c
		}
		at := &count[pass]
		for i, k := range keys {
			d := k >> shift & mask
			tmpK[at[d]], tmpI[at[d]] = k, idx[i]
			at[d]++
		}
		keys, tmpK, idx, tmpI = tmpK, keys, tmpI, idx
	}
	return idx
}
