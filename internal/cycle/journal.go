package cycle

import (
	"encoding/json"
	"os"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
)

// Record is one journal line: one prompt in one interaction of one step.
type Record struct {
	Step         int            `json:"step"`
	Interaction  int            `json:"interaction"`
	Prompt       string         `json:"prompt"`                 // as the black-box reads it: the text, or the conversation in words
	Conversation []chat.Message `json:"conversation,omitempty"` // the prompt's messages, for a conversation
	PromptTokens int            `json:"prompt_tokens"`          // the white-box's prompt: the rendered conversation's tokens
	Candidates   []string       `json:"candidates"`
	WhiteScores  []float64      `json:"white_scores"`
	WhiteRanking []int          `json:"white_ranking"`
	BlackRanking []int          `json:"black_ranking"`     // nil when unranked
	Rewards      []float64      `json:"rewards,omitempty"` // the ranker's scores of the candidates, when it has them
	Unranked     bool           `json:"unranked"`
	Permutation  []int          `json:"permutation,omitempty"` // label i+1 showed candidate Permutation[i]
	RawReplies   []string       `json:"raw_replies,omitempty"`
	RequestIDs   []string       `json:"request_ids,omitempty"` // cache keys of the black-box exchanges
	Agreement    []int          `json:"agreement"`
	EnteredPool  bool           `json:"entered_pool"`
	Demos        []string       `json:"demos"`               // prompts of the demonstrations shown
	NoTokens     []int          `json:"no_tokens,omitempty"` // candidates left out of training: no tokens
	Skipped      string         `json:"skipped,omitempty"`   // why the prompt was not trained on
	Weights      string         `json:"weights,omitempty"`   // the served weights that sampled the candidates (remote generation)
	Ended        []bool         `json:"ended,omitempty"`     // which candidates ended their turn (EOS or stop string) before the token budget
	Usage        blackbox.Usage `json:"usage"`
}

// StepMetrics is one metrics.jsonl line.
type StepMetrics struct {
	Step            int       `json:"step"`
	Loss            float64   `json:"loss"`
	RankTerm        float64   `json:"rank_term"`
	SFTTerm         float64   `json:"sft_term"`
	GradNorm        float64   `json:"grad_norm"`
	LR              float64   `json:"lr"`
	AgreementRate   float64   `json:"agreement_rate"` // ranked prompts with |A| >= tau
	MeanAgreement   float64   `json:"mean_agreement"` // mean |A|
	AgreementByIter []float64 `json:"agreement_by_interaction"`
	MeanAByIter     []float64 `json:"mean_agreement_by_interaction"`
	PoolSize        int       `json:"pool_size"`
	Ranked          int       `json:"ranked"`
	Unranked        int       `json:"unranked"`
	GenTokens       int       `json:"generated_tokens"`
	TrainTokens     int       `json:"train_tokens"`
	APIPromptTokens int       `json:"api_prompt_tokens"`
	APIOutTokens    int       `json:"api_completion_tokens"`
	APIRequests     int       `json:"api_requests"`
	CachedRequests  int       `json:"api_cached"`
	Cost            float64   `json:"cost"`
	CostTotal       float64   `json:"cost_total"`
	TokensPerSec    float64   `json:"tokens_per_s"`
	Seconds         float64   `json:"seconds"`
	// The step's wall time by phase: sampling candidates, white-box scoring, black-box
	// ranking, training (the rest is bookkeeping).
	SampleSeconds   float64            `json:"sample_s"`
	ScoreSeconds    float64            `json:"score_s"`
	BlackboxSeconds float64            `json:"blackbox_s"`
	TrainSeconds    float64            `json:"train_s"`
	Graphs          int                `json:"graphs"` // graphs built so far in this process (compiles, on XLA)
	Eval            map[string]float64 `json:"eval,omitempty"`
}

// appender writes JSON lines to a file opened for appending.
type appender struct{ f *os.File }

func openAppender(path string) (*appender, error) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &appender{f}, nil
}

func (a *appender) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = a.f.Write(append(b, '\n'))
	return err
}

// sync makes the lines so far durable; called at each completed step.
func (a *appender) sync() error { return a.f.Sync() }

func (a *appender) close() error { return a.f.Close() }
