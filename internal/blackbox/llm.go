package blackbox

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/openaiapi"
	"golang.org/x/time/rate"
)

// LLMConfig configures the OpenAI-compatible ranker.
type LLMConfig struct {
	BaseURL     string // API base as users write it, e.g. https://api.openai.com/v1
	Model       string
	APIKey      string // from ReadAPIKey; never logged or written
	Temperature float64
	MaxTokens   int           // reply budget (default 512)
	Timeout     time.Duration // per request (default 120s)
	MaxAttempts int           // per request, retries included (default 6)
	BaseDelay   time.Duration // first back-off (default 1s), doubled each retry, with jitter
	MaxDelay    time.Duration // back-off ceiling (default 60s)
	Concurrency int           // requests in flight (default 8)
	RPM, TPM    int           // optional requests/tokens per minute limits
	Consistency bool          // rank twice in different orders and keep what both agree on
	Prompter    *Prompter
	Cache       *Cache
	Prices      Prices
	Budget      *Budget
	HTTPClient  *http.Client
}

// ReadAPIKey returns the API key from file when given, else from the environment variable
// env; "" when neither is set (local servers often need none).
func ReadAPIKey(env, file string) (string, error) {
	if file != "" {
		b, err := files.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("API key file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv(env), nil
}

// LLM ranks through a chat-completions endpoint.
type LLM struct {
	cfg    LLMConfig
	client *openaiapi.Client
	rpm    *rate.Limiter
	tpm    *rate.Limiter
	warned sync.Once
}

// NewLLM validates cfg and fills in defaults.
func NewLLM(cfg LLMConfig) (*LLM, error) {
	if cfg.BaseURL == "" || cfg.Model == "" {
		return nil, fmt.Errorf("the LLM ranker needs a base URL and a model name")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxTokens, 512)
	if cfg.Prompter == nil {
		cfg.Prompter = DefaultPrompter()
	}
	if cfg.Prices == nil {
		cfg.Prices = DefaultPrices()
	}
	if cfg.Budget == nil {
		cfg.Budget = NewBudget(0, 0)
	}
	l := &LLM{cfg: cfg, client: openaiapi.New(openaiapi.Options{URL: strings.TrimRight(cfg.BaseURL, "/"), Key: cfg.APIKey,
		Timeout: cfg.Timeout, MaxAttempts: cfg.MaxAttempts, BaseDelay: cfg.BaseDelay, MaxDelay: cfg.MaxDelay,
		Concurrency: cfg.Concurrency, HTTP: cfg.HTTPClient})}
	if cfg.RPM > 0 {
		l.rpm = rate.NewLimiter(rate.Limit(float64(cfg.RPM)/60), max(1, cfg.RPM/60))
	}
	if cfg.TPM > 0 {
		l.tpm = rate.NewLimiter(rate.Limit(float64(cfg.TPM)/60), cfg.TPM)
	}
	return l, nil
}

// Describe implements Ranker.
func (l *LLM) Describe() string {
	s := fmt.Sprintf("LLM ranker: model %s at %s, temperature %g, in-context demonstrations", l.cfg.Model, l.cfg.BaseURL, l.cfg.Temperature)
	if l.cfg.Consistency {
		s += ", each ranking asked twice in different orders (position-bias control)"
	}
	return s
}

// Rank implements Ranker.
func (l *LLM) Rank(ctx context.Context, req Request) (*Result, error) {
	if len(req.Candidates) < 2 {
		return nil, fmt.Errorf("ranking needs at least 2 candidates, got %d", len(req.Candidates))
	}
	first, err := l.rankOnce(ctx, req)
	if err != nil || !l.cfg.Consistency || first.Unranked {
		return first, err
	}
	again := req
	again.Seed = req.Seed ^ 0x9e3779b97f4a7c15
	second, err := l.rankOnce(ctx, again)
	if err != nil {
		return nil, err
	}
	res := &Result{Raw: append(first.Raw, second.Raw...), RequestIDs: append(first.RequestIDs, second.RequestIDs...),
		Permutation: first.Permutation, Usage: first.Usage}
	res.Usage.Add(second.Usage)
	if second.Unranked {
		res.Unranked = true
		return res, nil
	}
	// Keep the order both passes agree on: their longest common subsequence.
	res.Ranking = LCS(first.Ranking, second.Ranking)
	return res, nil
}

func (l *LLM) rankOnce(ctx context.Context, req Request) (*Result, error) {
	msgs, perm := l.cfg.Prompter.Messages(req)
	n := len(req.Candidates)
	res := &Result{Permutation: perm}
	for try := 0; try < 2; try++ {
		reply, id, usage, err := l.complete(ctx, msgs)
		if err != nil {
			return nil, err
		}
		res.Raw = append(res.Raw, reply)
		res.RequestIDs = append(res.RequestIDs, id)
		res.Usage.Add(usage)
		if lab, ok := ParseRanking(reply, n); ok {
			res.Ranking = make([]int, n)
			for i, x := range lab {
				res.Ranking[i] = perm[x]
			}
			return res, nil
		}
		msgs = append(msgs, Message{Role: "assistant", Content: reply}, Message{Role: "user", Content: Correction(n)})
	}
	res.Unranked = true
	return res, nil
}

// complete returns the reply to msgs from the cache or the API.
func (l *LLM) complete(ctx context.Context, msgs []Message) (string, string, Usage, error) {
	cr := chatRequest{Model: l.cfg.Model, Messages: msgs, Temperature: l.cfg.Temperature, MaxTokens: l.cfg.MaxTokens}
	key := cr.key()
	if e, ok := l.cfg.Cache.get(key); ok {
		return e.Reply, key, Usage{PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens, CachedRequests: 1}, nil
	}
	if err := l.cfg.Budget.check(); err != nil {
		return "", key, Usage{}, err
	}
	if err := l.wait(ctx, cr); err != nil {
		return "", key, Usage{}, err
	}
	temp := l.cfg.Temperature
	req := openaiapi.ChatRequest{Model: l.cfg.Model, Temperature: &temp, MaxTokens: l.cfg.MaxTokens}
	for _, m := range msgs {
		role := m.Role
		if role != "system" && role != "assistant" {
			role = "user"
		}
		req.Messages = append(req.Messages, chat.Message{Role: role, Content: m.Content})
	}
	text, resp, err := l.client.Chat(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return "", key, Usage{}, ctx.Err()
		}
		return "", key, Usage{}, fmt.Errorf("%s at %s: %w", l.cfg.Model, l.cfg.BaseURL, err)
	}
	reply := capReply(text)
	u := Usage{PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens, Requests: 1}
	cost, known := l.cfg.Prices.Cost(l.cfg.Model, u.PromptTokens, u.CompletionTokens)
	if !known {
		l.warned.Do(func() { slog.Warn("model not in the price table; its cost counts as 0", "model", l.cfg.Model) })
	}
	u.Cost = cost
	l.cfg.Budget.add(cost)
	if err := l.cfg.Cache.put(&cacheEntry{Key: key, Request: cr, Reply: reply, PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}); err != nil {
		slog.Warn("could not cache a black-box reply", "error", err)
	}
	return reply, key, u, nil
}

// MaxReplyBytes is as much of a reply as is kept: a ranking reply of max_tokens (512 by
// default) is a few KiB, and everything kept is cached, journaled and, for a correction, sent
// back; a server answering megabytes would otherwise multiply them on disk.
const MaxReplyBytes = 32 << 10

// capReply cuts a reply longer than MaxReplyBytes (at a character boundary) and says so in it.
func capReply(reply string) string {
	if len(reply) <= MaxReplyBytes {
		return reply
	}
	cut := MaxReplyBytes
	for cut > 0 && !utf8.RuneStart(reply[cut]) {
		cut--
	}
	slog.Warn("black-box reply cut", "bytes", len(reply), "kept", cut)
	return fmt.Sprintf("%s\n[cyclealign: reply cut after %d of its %d bytes]", reply[:cut], cut, len(reply))
}

// wait applies the requests- and tokens-per-minute limits.
func (l *LLM) wait(ctx context.Context, cr chatRequest) error {
	if l.rpm != nil {
		if err := l.rpm.Wait(ctx); err != nil {
			return err
		}
	}
	if l.tpm != nil {
		n := cr.MaxTokens
		for _, m := range cr.Messages {
			n += l.cfg.Prompter.count(m.Content)
		}
		if err := l.tpm.WaitN(ctx, min(n, l.tpm.Burst())); err != nil {
			return err
		}
	}
	return nil
}
