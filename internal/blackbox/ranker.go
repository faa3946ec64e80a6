// Package blackbox owns the rankers that label the white-box's candidates: an LLM behind any
// OpenAI-compatible chat API, prompted with an instruction and in-context demonstrations
// (retried, rate-limited, cached on disk and costed), and a local reward model for users
// without an API. Both satisfy Ranker.
package blackbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/cyclealign/cyclealign/internal/chat"
)

// Demo is a worked ranking shown to the ranker: a prompt, its candidates and their ranking
// (0-based candidate indices, best first; it may cover a subset of the candidates).
type Demo struct {
	Prompt     string   `json:"prompt"`
	Candidates []string `json:"candidates"`
	Ranking    []int    `json:"ranking"`
}

// Validate checks that Ranking is a list of distinct candidate indices.
func (d Demo) Validate() error {
	if len(d.Candidates) < 2 {
		return fmt.Errorf("demonstration needs at least 2 candidates, has %d", len(d.Candidates))
	}
	if len(d.Ranking) < 2 {
		return fmt.Errorf("demonstration ranking needs at least 2 entries, has %d", len(d.Ranking))
	}
	seen := map[int]bool{}
	for _, r := range d.Ranking {
		if r < 0 || r >= len(d.Candidates) || seen[r] {
			return fmt.Errorf("demonstration ranking %v is not a ranking of candidates 0..%d", d.Ranking, len(d.Candidates)-1)
		}
		seen[r] = true
	}
	return nil
}

// Request asks for a ranking of Candidates for Prompt.
type Request struct {
	Prompt string // as the ranker reads it: the text, or the conversation in words
	// Conversation is the prompt's messages when it is a conversation, for scorers that read
	// one as such (a reward model with a chat template).
	Conversation []chat.Message
	Candidates   []string
	Demos        []Demo
	// Seed fixes the random order candidates are shown in (the permutation is undone in the
	// result), so a re-run sends the same request and hits the cache.
	Seed uint64
}

// Usage counts tokens and estimated cost of the requests behind one ranking.
type Usage struct {
	PromptTokens     int     `json:"prompt_tokens"`
	CompletionTokens int     `json:"completion_tokens"`
	Requests         int     `json:"requests"` // sent over the network
	CachedRequests   int     `json:"cached"`   // answered from the cache (cost nothing)
	Cost             float64 `json:"cost"`     // estimated, from the price table
}

// Add accumulates u2 into u.
func (u *Usage) Add(u2 Usage) {
	u.PromptTokens += u2.PromptTokens
	u.CompletionTokens += u2.CompletionTokens
	u.Requests += u2.Requests
	u.CachedRequests += u2.CachedRequests
	u.Cost += u2.Cost
}

// Result is a ranking, or "unranked" with the raw replies kept for inspection.
type Result struct {
	Ranking     []int    `json:"ranking"` // 0-based candidate indices, best first; nil when unranked
	Unranked    bool     `json:"unranked"`
	Raw         []string `json:"raw"`         // every reply, the correction's included
	RequestIDs  []string `json:"request_ids"` // cache keys of the requests made
	Permutation []int    `json:"permutation"` // label i+1 showed candidate Permutation[i]
	// Rewards are the ranker's scores of the candidates (in their given order) when it has
	// them (a reward model), for losses that weigh by reward differences; nil otherwise.
	Rewards []float64 `json:"rewards,omitempty"`
	Usage   Usage     `json:"usage"`
}

// Ranker ranks candidates. Implementations are safe for concurrent use.
type Ranker interface {
	Rank(ctx context.Context, req Request) (*Result, error)
	// Describe says what the ranker is and what it uses, for logs and run directories.
	Describe() string
}

// ErrBudget is returned once the run's estimated API cost reaches its --max-cost.
var ErrBudget = errors.New("API cost budget reached")
