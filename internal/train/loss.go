package train

import (
	"fmt"
	"log/slog"
	"math"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
)

// LossKind names a training objective (docs/METHOD.md, Losses).
type LossKind string

// The objectives.
const (
	SFT  LossKind = "sft"
	RRHF LossKind = "rrhf"
	PRO  LossKind = "pro"
	// BT is the Bradley–Terry reward-model loss, −log σ(r_chosen − r_rejected), with r the
	// score head at the last token; candidates are [chosen, rejected].
	BT LossKind = "bt"
)

// ParseLoss checks a loss name.
func ParseLoss(s string) (LossKind, error) {
	switch k := LossKind(s); k {
	case SFT, RRHF, PRO, BT:
		return k, nil
	}
	return "", fmt.Errorf("unknown loss %q (want sft, rrhf, pro or bt)", s)
}

// DefaultSFTWeight is λ of docs/METHOD.md: 1 for RRHF, 0.5 for PRO.
func DefaultSFTWeight(k LossKind) float64 {
	if k == PRO {
		return 0.5
	}
	return 1
}

// NewLoss parses an objective's name; a negative sftWeight takes the objective's default λ.
// sftNorm is "mean" (docs/METHOD.md) or "sum" (PRO's reference); proTemperature weighs PRO by
// reward differences.
func NewLoss(name string, sftWeight float64, sftNorm string, proTemperature bool) (Loss, error) {
	kind, err := ParseLoss(name)
	if err != nil {
		return Loss{}, err
	}
	if sftNorm != "mean" && sftNorm != "sum" {
		return Loss{}, fmt.Errorf("sft norm %q: want mean or sum", sftNorm)
	}
	if sftWeight < 0 {
		sftWeight = DefaultSFTWeight(kind)
	}
	return Loss{Kind: kind, SFTWeight: sftWeight, SFTSum: sftNorm == "sum", PROTemperature: proTemperature}, nil
}

// Loss is an objective with its SFT weight λ.
type Loss struct {
	Kind      LossKind
	SFTWeight float64
	// SFTSum makes the SFT term the summed, not the mean, token log-probability of the best
	// candidate, as PRO's reference code does (docs/METHOD.md's default is the mean).
	SFTSum bool
	// PROTemperature weighs PRO's terms by reward differences (the reference's temperature)
	// for examples that carry rewards.
	PROTemperature bool
}

// Fits reports whether m has the head l trains: a reward head (num_labels, a
// ...ForSequenceClassification) for BT, a language-model head for the others.
func (l Loss) Fits(m *model.Model) error {
	if l.Kind != BT {
		return m.CheckLanguageModel()
	}
	if m.Config.NumLabels == 0 {
		return fmt.Errorf("%s has a language-model head, and the bt loss trains a reward model (a ...ForSequenceClassification with a score head): make one with cyclealign train-rm", m.Name())
	}
	return nil
}

// Scored is one example's candidates, best first: their mean (length-normalised) and summed
// response log-probabilities, and the rewards that ranked them (nil when unknown).
type Scored struct {
	Mean, Sum, Reward []float64
}

func meanOnly(s []float64) Scored { return Scored{Mean: s, Sum: s} }

// proLogits are PRO's logits for the suffix starting at k: the scores, or, with rewards and
// temperature on, s_k·max_j(r_k − r_j) and s_j·(r_k − r_j) for j > k (PRO's reference).
func (l Loss) proLogits(sc Scored, k int) (x, mult []float64) {
	s := sc.Mean[k:]
	mult = l.proMultipliers(sc.Reward, k, len(sc.Mean))
	x = make([]float64, len(s))
	for j := range x {
		x[j] = s[j] * mult[j]
	}
	return x, mult
}

// proMultipliers are the factors of the suffix k..n-1's scores in PRO's k-th term: 1, or with
// rewards and temperature on, max_j(r_k − r_j) for k itself and r_k − r_j for j > k.
func (l Loss) proMultipliers(reward []float64, k, n int) []float64 {
	mult := make([]float64, n-k)
	for j := range mult {
		mult[j] = 1
	}
	if l.PROTemperature && reward != nil {
		top := 0.0
		for j := 1; j < len(mult); j++ {
			mult[j] = reward[k] - reward[k+j]
			top = math.Max(top, mult[j])
		}
		mult[0] = top
	}
	return mult
}

// Terms returns L_rank (L_pro for PRO, 0 for SFT) and L_sft for one prompt's length-normalised
// scores, ranked best first. This is the reference the graph is tested against.
func (l Loss) Terms(s []float64) (rank, sft float64) { return l.TermsOf(meanOnly(s)) }

// TermsOf is Terms on everything an example's scoring gives.
func (l Loss) TermsOf(sc Scored) (rank, sft float64) {
	s := sc.Mean
	sft = -s[0]
	if l.SFTSum {
		sft = -sc.Sum[0]
	}
	switch l.Kind {
	case BT:
		return math.Log1p(math.Exp(s[1] - s[0])), 0
	case RRHF:
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				rank += math.Max(0, s[j]-s[i])
			}
		}
	case PRO:
		for k := 0; k < len(s)-1; k++ {
			x, _ := l.proLogits(sc, k)
			rank += logSumExp(x) - x[0]
		}
	}
	return rank, sft
}

// logSumExp is log Σ exp(s), computed stably.
func logSumExp(s []float64) float64 {
	m := s[0]
	for _, v := range s {
		m = math.Max(m, v)
	}
	sum := 0.0
	for _, v := range s {
		sum += math.Exp(v - m)
	}
	return m + math.Log(sum)
}

// Grad is the gradient of Total(TermsOf(sc)) with respect to the mean and the summed scores.
func (l Loss) Grad(sc Scored) (dMean, dSum []float64) {
	s := sc.Mean
	d := make([]float64, len(s))
	dSum = make([]float64, len(s))
	switch l.Kind {
	case BT:
		sg := 1 / (1 + math.Exp(s[0]-s[1]))
		d[1], d[0] = sg, -sg
		return d, dSum
	case RRHF:
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j] > s[i] {
					d[j]++
					d[i]--
				}
			}
		}
	case PRO:
		for k := 0; k < len(s)-1; k++ {
			x, mult := l.proLogits(sc, k)
			lse := logSumExp(x)
			for j := range x { // the softmax over the suffix, through the multipliers
				d[k+j] += math.Exp(x[j]-lse) * mult[j]
			}
			d[k] -= mult[0]
		}
	}
	w := l.SFTWeight
	if l.Kind == SFT {
		w = 1
	}
	if l.SFTSum {
		dSum[0] -= w
	} else {
		d[0] -= w
	}
	return d, dSum
}

// Total combines the terms: L_sft alone for SFT, L_rank + λ·L_sft otherwise.
func (l Loss) Total(rank, sft float64) float64 {
	switch l.Kind {
	case SFT:
		return sft
	case BT:
		return rank
	}
	return rank + l.SFTWeight*sft
}

// Example is a tokenized ranked prompt.
type Example struct {
	Prompt     []int
	Candidates [][]int   // best first
	Rewards    []float64 // the candidates' rewards, best first (nil: unknown)
}

// End is what each candidate is trained with at its end, so that the model learns where a
// reply stops (RRHF's code appends EOS to every response, as TRL's trainers do): Text is
// appended before encoding (a stop string, such as the HH format's "\n\nHuman:"), IDs after.
type End struct {
	Text string
	IDs  []int
}

// ParseEnd reads an end as users give it: "eos" (the model's first EOS token, from eos), "none",
// or a text.
func ParseEnd(spec string, eos []int) (End, error) {
	switch spec {
	case "none":
		return End{}, nil
	case "eos":
		if len(eos) == 0 {
			return End{}, fmt.Errorf("the model's config.json has no eos_token_id: give none, or the text a reply ends with")
		}
		return End{IDs: eos[:1]}, nil
	case "":
		return End{}, fmt.Errorf("empty: give eos, none, or the text a reply ends with")
	}
	return End{Text: spec}, nil
}

// Tokenize encodes a ranked example: the prompt with special tokens, candidates without, each
// with end appended and then truncated to maxResponse tokens (0: no limit; a cut candidate
// loses its end, as it did not reach it).
func Tokenize(tok *tokenizer.Tokenizer, r Ranked, maxResponse int, end End) Example {
	return Example{Prompt: tok.Encode(r.Prompt, true), Rewards: r.Rewards, Candidates: encodeCandidates(tok, r.Candidates, maxResponse, end)}
}

// encodeCandidates encodes candidates without special tokens, each with end appended and then
// cut to maxResponse tokens (0: no limit).
func encodeCandidates(tok *tokenizer.Tokenizer, cands []string, maxResponse int, end End) [][]int {
	var out [][]int
	for _, c := range cands {
		ids := append(tok.Encode(c+end.Text, false), end.IDs...)
		if maxResponse > 0 && len(ids) > maxResponse {
			ids = ids[:maxResponse]
		}
		out = append(out, ids)
	}
	return out
}

// rows flattens examples into one sequence (prompt + candidate) per candidate, with each
// prompt's length, the (example, rank) each row belongs to, and the real token count.
type rows struct {
	seqs   [][]int
	plen   []int
	owner  [][2]int
	tokens int
	maxLen int
}

func flatten(m *model.Model, exs []Example, minCands int) (*rows, error) {
	rs := &rows{}
	for e, ex := range exs {
		if len(ex.Candidates) < minCands {
			return nil, fmt.Errorf("example %d has %d candidates; need at least %d", e, len(ex.Candidates), minCands)
		}
		for c, cand := range ex.Candidates {
			if len(cand) == 0 {
				return nil, fmt.Errorf("example %d candidate %d has no tokens", e, c)
			}
			s := append(append([]int(nil), ex.Prompt...), cand...)
			rs.seqs = append(rs.seqs, s)
			rs.plen = append(rs.plen, len(ex.Prompt))
			rs.owner = append(rs.owner, [2]int{e, c})
			rs.maxLen = max(rs.maxLen, len(s))
			rs.tokens += len(s)
		}
	}
	if rs.maxLen > m.Config.MaxPositions {
		return nil, fmt.Errorf("a prompt plus candidate has %d tokens, over the model's %d positions", rs.maxLen, m.Config.MaxPositions)
	}
	return rs, nil
}

// TokenizeFitted tokenizes ranked examples (Tokenize) and fits each to the model's positions as
// align does, dropping the oldest prompt tokens; it logs how many prompts were shortened. A
// conversation's prompt is rendered by the model's chat template with the generation prompt,
// and where end is the model's EOS its candidates end with what the template writes after an
// assistant message instead ("<|im_end|>\n" in ChatML), as TRL takes a completion.
func TokenizeFitted(m *model.Model, ranked []Ranked, maxResponse int, end End) ([]Example, error) {
	exs := make([]Example, len(ranked))
	cut := 0
	for i, r := range ranked {
		e, p := end, chat.Prompt{Text: r.Prompt}
		if r.Conversation != nil {
			p = chat.Prompt{Messages: r.Conversation}
			if end.IDs != nil {
				e = End{Text: m.TurnEnd()}
			}
		}
		prompt, err := m.PromptIDs(p)
		if err != nil {
			return nil, fmt.Errorf("example %d: %w", i, err)
		}
		ex := Example{Prompt: prompt, Rewards: r.Rewards, Candidates: encodeCandidates(m.Tokenizer, r.Candidates, maxResponse, e)}
		exs[i] = ex.Fit(m.Config.MaxPositions)
		if len(exs[i].Prompt) < len(ex.Prompt) {
			cut++
		}
	}
	if cut > 0 {
		slog.Info("prompts shortened to fit the model's positions (oldest tokens dropped)", "prompts", cut, "of", len(exs), "positions", m.Config.MaxPositions)
	}
	return exs, nil
}

// Fit shortens an example so every prompt+candidate fits maxLen tokens (model.FitContext).
func (ex Example) Fit(maxLen int) Example {
	out := Example{Prompt: ex.Prompt, Rewards: ex.Rewards}
	longest := []int{}
	for _, c := range ex.Candidates {
		_, c = model.FitContext(ex.Prompt, c, maxLen)
		out.Candidates = append(out.Candidates, c)
		if len(c) > len(longest) {
			longest = c
		}
	}
	out.Prompt, _ = model.FitContext(ex.Prompt, longest, maxLen)
	return out
}
