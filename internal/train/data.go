package train

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/data"
)

// Ranked is one prompt with candidates ranked best first.
type Ranked struct {
	Prompt string `json:"prompt"`
	// Conversation, for a conversational row, holds the prompt's messages (Prompt then holds
	// them in words): the prompt is rendered by the model's chat template.
	Conversation []chat.Message `json:"conversation,omitempty"`
	Candidates   []string       `json:"candidates"`
	Rewards      []float64      `json:"rewards,omitempty"` // the candidates' rewards, best first, when known
}

// rankedLine accepts the project's format and RRHF's {"query", "responses", "scores"};
// preference rows go to data.Preference.
type rankedLine struct {
	Prompt     json.RawMessage `json:"prompt"`
	Candidates []string        `json:"candidates"`
	Rewards    []float64       `json:"rewards"`
	Query      *string         `json:"query"`
	Responses  []string        `json:"responses"`
	Scores     []float64       `json:"scores"`
}

// ParseRanked validates one record: {"prompt", "candidates"} (best first, optional
// "rewards"), RRHF's {"query", "responses", "scores"}, or a preference row in TRL's formats
// (text or conversational, explicit or implicit prompt) or HH's, whose chosen reply ranks first.
func ParseRanked(rec []byte) (Ranked, error) {
	var l rankedLine
	if err := json.Unmarshal(rec, &l); err != nil {
		return Ranked{}, fmt.Errorf("invalid JSON: %w", err)
	}
	var r Ranked
	switch {
	case l.Candidates == nil && l.Query == nil:
		p, chosen, rejected, ok, err := data.Preference(rec)
		switch {
		case err != nil:
			return Ranked{}, err
		case !ok:
			return Ranked{}, fmt.Errorf(`want {"prompt", "candidates"}, {"query", "responses", "scores"} or {"prompt", "chosen", "rejected"}`)
		}
		r = Ranked{Prompt: p.Plain(), Conversation: p.Messages, Candidates: []string{chosen, rejected}}
	case l.Prompt != nil:
		if err := json.Unmarshal(l.Prompt, &r.Prompt); err != nil {
			return Ranked{}, fmt.Errorf(`field "prompt": want a string with "candidates"`)
		}
		r.Candidates, r.Rewards = l.Candidates, l.Rewards
		if l.Rewards != nil && len(l.Rewards) != len(l.Candidates) {
			return Ranked{}, fmt.Errorf("%d candidates but %d rewards", len(l.Candidates), len(l.Rewards))
		}
	case l.Query != nil:
		if len(l.Scores) != len(l.Responses) {
			return Ranked{}, fmt.Errorf("%d responses but %d scores", len(l.Responses), len(l.Scores))
		}
		idx := make([]int, len(l.Responses))
		for i := range idx {
			idx[i] = i
		}
		// Highest score first; ties keep file order.
		sort.SliceStable(idx, func(a, b int) bool { return l.Scores[idx[a]] > l.Scores[idx[b]] })
		r.Prompt = *l.Query
		for _, i := range idx {
			r.Candidates = append(r.Candidates, l.Responses[i])
			r.Rewards = append(r.Rewards, l.Scores[i])
		}
	default:
		return Ranked{}, fmt.Errorf(`want {"prompt", "candidates"}, {"query", "responses", "scores"} or {"prompt", "chosen", "rejected"}`)
	}
	if r.Prompt == "" {
		return Ranked{}, fmt.Errorf("empty prompt")
	}
	if len(r.Candidates) < 2 {
		return Ranked{}, fmt.Errorf("%d candidate(s); a ranking needs at least 2", len(r.Candidates))
	}
	for i, c := range r.Candidates {
		if c == "" {
			return Ranked{}, fmt.Errorf("candidate %d is empty", i)
		}
	}
	return r, nil
}

// ReadRanked reads ranked examples from .jsonl(.gz) or a .json array; blank lines are skipped,
// any bad record is an error that names the file and its line or row.
func ReadRanked(path string) ([]Ranked, error) {
	var out []Ranked
	err := data.EachRecord(path, func(rec []byte, _ string) error {
		r, err := ParseRanked(rec)
		if err != nil {
			return err
		}
		if len(out) > 0 && (out[0].Conversation == nil) != (r.Conversation == nil) {
			return fmt.Errorf("a file holds conversations or texts, not both")
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no examples", path)
	}
	return out, nil
}
