package blackbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cyclealign/cyclealign/internal/blackbox/llmtest"
)

const testKey = "sk-test-SECRET-1234567890"

var shorterFirst = func(a, b string) bool { return len(a) < len(b) }

func newTestLLM(t *testing.T, s *llmtest.Server, mod func(*LLMConfig)) *LLM {
	t.Helper()
	cfg := LLMConfig{BaseURL: s.BaseURL(), Model: "judge-1", APIKey: testKey, BaseDelay: time.Millisecond,
		MaxDelay: 200 * time.Millisecond, Timeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	l, err := NewLLM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var cands = []string{"a medium length reply", "short", "the longest reply of all of them here", "tiny"}

// expected ranking under shorterFirst: tiny(3), short(1), medium(0), longest(2).
var shortRank = []int{3, 1, 0, 2}

func demo() Demo {
	return Demo{Prompt: "\n\nHuman: demo question\n\nAssistant:", Candidates: []string{"x1", "x2 longer", "x3"}, Ranking: []int{2, 0, 1}}
}

func TestLLMRanksAndSendsWhatItShould(t *testing.T) {
	s := llmtest.New(llmtest.RankBy(shorterFirst))
	defer s.Close()
	l := newTestLLM(t, s, nil)
	res, err := l.Rank(context.Background(), Request{Prompt: "\n\nHuman: hi\n\nAssistant:", Candidates: cands, Demos: []Demo{demo()}, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Ranking, shortRank) || res.Unranked {
		t.Fatalf("ranking %v, want %v", res.Ranking, shortRank)
	}
	reqs := s.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Header.Get("Authorization") != "Bearer "+testKey || r.Model != "judge-1" || r.Temperature == nil || *r.Temperature != 0 {
		t.Fatalf("request: auth %q model %q temperature %v", r.Header.Get("Authorization"), r.Model, r.Temperature)
	}
	roles := []string{}
	for _, m := range r.Messages {
		roles = append(roles, m.Role)
	}
	if !slices.Equal(roles, []string{"system", "user", "assistant", "user"}) || r.Messages[0].Content != DefaultInstruction {
		t.Fatalf("roles %v", roles)
	}
	if !strings.Contains(r.Messages[1].Content, "demo question") || !strings.Contains(r.Messages[1].Content, "x2 longer") {
		t.Fatalf("demonstration missing: %q", r.Messages[1].Content)
	}
	// The demonstration's answer ranks x3 > x1 > x2 in terms of the labels it showed.
	shownDemo := llmtest.Candidates(llmtest.Request{Messages: r.Messages[:2]})
	var demoOrder []string
	for _, lab := range mustParse(t, r.Messages[2].Content, 3) {
		demoOrder = append(demoOrder, shownDemo[lab])
	}
	if !slices.Equal(demoOrder, []string{"x3", "x1", "x2 longer"}) {
		t.Fatalf("demonstration answer %q ranks %v", r.Messages[2].Content, demoOrder)
	}
	// Candidates were shown in the recorded permutation.
	shown := llmtest.Candidates(r)
	for i, c := range res.Permutation {
		if shown[i] != cands[c] {
			t.Fatalf("label %d shows %q, permutation says %q", i+1, shown[i], cands[c])
		}
	}
	if slices.Equal(res.Permutation, []int{0, 1, 2, 3}) {
		t.Fatal("candidates were not shuffled")
	}
}

func mustParse(t *testing.T, s string, n int) []int {
	r, ok := ParseRanking(s, n)
	if !ok {
		t.Fatalf("unparseable %q", s)
	}
	return r
}

func TestLLMReplyVariantsAndCorrection(t *testing.T) {
	formats := []func([]int) string{
		func(l []int) string { return llmtest.FormatRanking(l) },
		func(l []int) string { return strings.NewReplacer("[", "", "]", "").Replace(llmtest.FormatRanking(l)) },
		func(l []int) string {
			return "[" + strings.ReplaceAll(strings.Trim(llmtest.FormatRanking(l), "[]"), "] > [", ", ") + "]"
		},
		func(l []int) string { return "Let me think. [1] is long.\nFinal ranking: " + llmtest.FormatRanking(l) },
	}
	for i, f := range formats {
		s := llmtest.New(func(_ int, req llmtest.Request) llmtest.Reply {
			return llmtest.Reply{Content: f(llmtest.Order(llmtest.Candidates(req), shorterFirst))}
		})
		res, err := newTestLLM(t, s, nil).Rank(context.Background(), Request{Prompt: "p", Candidates: cands, Seed: uint64(i)})
		s.Close()
		if err != nil || !slices.Equal(res.Ranking, shortRank) {
			t.Errorf("format %d (%q): %v %v", i, f([]int{1, 2, 3, 4}), res, err)
		}
	}
	// A non-permutation, then a correct answer to the corrective follow-up.
	s := llmtest.New(func(n int, req llmtest.Request) llmtest.Reply {
		if n == 0 {
			return llmtest.Reply{Content: "[1] > [1] > [2]"}
		}
		return llmtest.RankBy(shorterFirst)(n, req)
	})
	defer s.Close()
	res, err := newTestLLM(t, s, nil).Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
	if err != nil || !slices.Equal(res.Ranking, shortRank) || len(res.Raw) != 2 {
		t.Fatalf("correction: %+v %v", res, err)
	}
	second := s.Requests()[1].Messages
	if last := second[len(second)-1]; last.Role != "user" || !strings.Contains(last.Content, "not a valid ranking") || second[len(second)-2].Content != "[1] > [1] > [2]" {
		t.Fatalf("corrective follow-up: %+v", second[len(second)-2:])
	}
	// Garbage twice: unranked, raw replies kept, no error.
	g := llmtest.New(func(int, llmtest.Request) llmtest.Reply { return llmtest.Reply{Content: "I like them all."} })
	defer g.Close()
	res, err = newTestLLM(t, g, nil).Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
	if err != nil || !res.Unranked || res.Ranking != nil || len(res.Raw) != 2 || res.Raw[0] != "I like them all." {
		t.Fatalf("garbage: %+v %v", res, err)
	}
	// A body that is not a completion at all is an error naming the server, never a crash.
	b := llmtest.New(func(int, llmtest.Request) llmtest.Reply { return llmtest.Reply{RawBody: "<html>gateway</html>"} })
	defer b.Close()
	_, err = newTestLLM(t, b, func(c *LLMConfig) { c.MaxAttempts = 2 }).Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
	if err == nil || !strings.Contains(err.Error(), b.BaseURL()) {
		t.Fatalf("a non-JSON body: %v", err)
	}
}

func TestLLMFaults(t *testing.T) {
	ok := llmtest.RankBy(shorterFirst)
	cases := []struct {
		name     string
		first    llmtest.Reply
		requests int
		minWait  time.Duration
	}{
		{"429 with Retry-After", llmtest.Reply{Status: 429, Content: "slow down", Header: map[string]string{"Retry-After": "0.3"}}, 2, 300 * time.Millisecond},
		{"500", llmtest.Reply{Status: 500, Content: "boom"}, 2, 0},
		{"503", llmtest.Reply{Status: 503, Content: "overloaded"}, 2, 0},
		{"hang past the timeout", llmtest.Reply{Hang: true}, 2, 150 * time.Millisecond},
		{"dropped connection", llmtest.Reply{Drop: true}, 2, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := llmtest.New(func(n int, req llmtest.Request) llmtest.Reply {
				if n == 0 {
					return c.first
				}
				return ok(n, req)
			})
			defer s.Close()
			l := newTestLLM(t, s, func(cfg *LLMConfig) { cfg.Timeout = 150 * time.Millisecond; cfg.MaxDelay = time.Second })
			start := time.Now()
			res, err := l.Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
			if err != nil || !slices.Equal(res.Ranking, shortRank) {
				t.Fatalf("%v %v", res, err)
			}
			if n := len(s.Requests()); n != c.requests {
				t.Fatalf("%d requests, want %d", n, c.requests)
			}
			if el := time.Since(start); el < c.minWait {
				t.Fatalf("retried after %v, want at least %v", el, c.minWait)
			}
		})
	}
	t.Run("400 fails fast with the server's message", func(t *testing.T) {
		s := llmtest.New(func(int, llmtest.Request) llmtest.Reply {
			return llmtest.Reply{Status: 400, Content: "model judge-1 does not exist"}
		})
		defer s.Close()
		_, err := newTestLLM(t, s, nil).Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
		if err == nil || !strings.Contains(err.Error(), "model judge-1 does not exist") || !strings.Contains(err.Error(), "400") || len(s.Requests()) != 1 {
			t.Fatalf("%v after %d requests", err, len(s.Requests()))
		}
		if strings.Contains(err.Error(), testKey) {
			t.Fatal("error message holds the API key")
		}
	})
	t.Run("attempts are bounded", func(t *testing.T) {
		s := llmtest.New(func(int, llmtest.Request) llmtest.Reply { return llmtest.Reply{Status: 500, Content: "down"} })
		defer s.Close()
		_, err := newTestLLM(t, s, func(c *LLMConfig) { c.MaxAttempts = 3 }).Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
		if err == nil || len(s.Requests()) != 3 || !strings.Contains(err.Error(), "down") {
			t.Fatalf("%v after %d requests", err, len(s.Requests()))
		}
	})
}

func TestLLMCacheBudgetAndSecrets(t *testing.T) {
	s := llmtest.New(llmtest.RankBy(shorterFirst))
	defer s.Close()
	dir := t.TempDir()
	cache, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	reqs := []Request{{Prompt: "p1", Candidates: cands, Seed: 1}, {Prompt: "p2", Candidates: cands[:3], Seed: 2, Demos: []Demo{demo()}}}
	run := func() Usage {
		l := newTestLLM(t, s, func(c *LLMConfig) { c.Cache = cache })
		var u Usage
		for _, r := range reqs {
			res, err := l.Rank(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			u.Add(res.Usage)
		}
		return u
	}
	first := run()
	n := len(s.Requests())
	second := run()
	if n != 2 || len(s.Requests()) != n || first.Requests != 2 || second.Requests != 0 || second.CachedRequests != 2 {
		t.Fatalf("second run sent %d requests (first %+v, second %+v)", len(s.Requests())-n, first, second)
	}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), testKey) {
				t.Errorf("%s holds the API key", p)
			}
		}
		return nil
	})
	// Budget: priced model, limit below two requests' cost.
	b := NewBudget(0, 1e-9)
	l := newTestLLM(t, s, func(c *LLMConfig) {
		c.Prices = Prices{"judge-1": {InputPerMillion: 1, OutputPerMillion: 1}}
		c.Budget = b
	})
	res, err := l.Rank(context.Background(), Request{Prompt: "fresh", Candidates: cands})
	if err != nil || res.Usage.Cost <= 0 {
		t.Fatalf("first priced request: %+v %v", res, err)
	}
	if _, err := l.Rank(context.Background(), Request{Prompt: "fresh 2", Candidates: cands}); !errors.Is(err, ErrBudget) {
		t.Fatalf("over budget: %v", err)
	}
}

func TestLLMConsistencyAndLimits(t *testing.T) {
	// A judge with position bias: it always puts the first label first, then the rest by length.
	var inflight, peak atomic.Int32
	s := llmtest.New(func(_ int, req llmtest.Request) llmtest.Reply {
		cur := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if cur <= p || peak.CompareAndSwap(p, cur) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		order := append([]int{1}, llmtest.Order(llmtest.Candidates(req)[1:], shorterFirst)...)
		for i := 1; i < len(order); i++ {
			order[i]++
		}
		return llmtest.Reply{Content: llmtest.FormatRanking(order)}
	})
	defer s.Close()
	l := newTestLLM(t, s, func(c *LLMConfig) { c.Consistency = true; c.Concurrency = 2 })
	res, err := l.Rank(context.Background(), Request{Prompt: "p", Candidates: cands, Seed: 5})
	if err != nil || len(s.Requests()) != 2 {
		t.Fatalf("%v, %d requests", err, len(s.Requests()))
	}
	// What both orders agree on is a subsequence of the unbiased ranking.
	if len(res.Ranking) < 2 || len(res.Ranking) == len(cands) && !slices.Equal(res.Ranking, shortRank) {
		t.Fatalf("consistent part %v", res.Ranking)
	}
	for i := 1; i < len(res.Ranking); i++ {
		if slices.Index(shortRank, res.Ranking[i]) < slices.Index(shortRank, res.Ranking[i-1]) {
			t.Fatalf("consistent part %v contradicts the unbiased order %v", res.Ranking, shortRank)
		}
	}
	done := make(chan struct{})
	for i := 0; i < 6; i++ {
		go func(i int) {
			l.Rank(context.Background(), Request{Prompt: "q", Candidates: cands, Seed: uint64(100 + i)})
			done <- struct{}{}
		}(i)
	}
	for i := 0; i < 6; i++ {
		<-done
	}
	if peak.Load() > 2 {
		t.Fatalf("%d requests in flight with concurrency 2", peak.Load())
	}
}

func TestTruncation(t *testing.T) {
	p := DefaultPrompter()
	p.CandidateTokens = 10
	long := strings.Repeat("word ", 100)
	msgs, _ := p.Messages(Request{Prompt: "q", Candidates: []string{long, "ok"}})
	last := msgs[len(msgs)-1].Content
	if !strings.Contains(last, TruncationMarker) || strings.Contains(last, strings.Repeat("word ", 20)) {
		t.Fatalf("long candidate not truncated visibly: %q", last)
	}
}

func TestParseBlockInvertsMessages(t *testing.T) {
	c := []string{"first line\nsecond line of one reply", "[2] looks like a label but is text", "third"}
	msgs, perm := DefaultPrompter().Messages(Request{Prompt: "\n\nHuman: q?\n\nAssistant:", Candidates: c, Seed: 3})
	prompt, got, ok := ParseBlock(msgs[len(msgs)-1].Content)
	if !ok || prompt != "Human: q?\n\nAssistant:" || len(got) != 3 {
		t.Fatalf("ParseBlock: %q %q %v", prompt, got, ok)
	}
	for i, k := range perm {
		if got[i] != c[k] {
			t.Fatalf("label %d: %q, want %q", i+1, got[i], c[k])
		}
	}
}

// TestRequestsPerMinute: with rpm 600 (10 a second, a burst of 10) 15 requests need at least
// half a second.
func TestRequestsPerMinute(t *testing.T) {
	s := llmtest.New(llmtest.RankBy(shorterFirst))
	defer s.Close()
	l := newTestLLM(t, s, func(c *LLMConfig) { c.RPM = 600; c.Concurrency = 16 })
	start := time.Now()
	done := make(chan error, 15)
	for i := 0; i < 15; i++ {
		go func(i int) {
			_, err := l.Rank(context.Background(), Request{Prompt: fmt.Sprint("p", i), Candidates: cands})
			done <- err
		}(i)
	}
	for i := 0; i < 15; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 450*time.Millisecond {
		t.Fatalf("15 requests at 600/min took %v", el)
	}
}

// TestCheckSaysWhatWasTried: an unreachable server fails at once, naming what was tried; a
// base URL without /v1 that 404s is told to add it; an empty 404 still says "Not Found".
func TestCheckSaysWhatWasTried(t *testing.T) {
	s := llmtest.New(llmtest.RankBy(shorterFirst))
	base := s.BaseURL()
	s.Close()
	l := newTestLLM(t, s, func(c *LLMConfig) { c.BaseURL = base })
	start := time.Now()
	err := l.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the black-box at "+base) || !strings.Contains(err.Error(), "GET "+base+"/models") {
		t.Fatalf("unreachable server: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("a refused connection took %v to report (retried?)", time.Since(start))
	}
	empty404 := httptest.NewServer(http.NotFoundHandler())
	defer empty404.Close()
	l = newTestLLM(t, s, func(c *LLMConfig) { c.BaseURL = empty404.URL; c.MaxAttempts = 1 })
	if err := l.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "try --blackbox-url "+empty404.URL+"/v1") {
		t.Fatalf("base URL without /v1: %v", err)
	}
	_, err = l.Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "Not Found") {
		t.Fatalf("an empty 404 reply: %v", err)
	}
}

// A 20 MB reply is kept only up to MaxReplyBytes, marked as cut, in the result, the cache and
// the correction sent back (it made an 81 MB journal and a 121 MB cache for two prompts).
func TestHugeReplyIsCut(t *testing.T) {
	huge := strings.Repeat("é blah ", 20<<20/8)
	s := llmtest.New(func(int, llmtest.Request) llmtest.Reply { return llmtest.Reply{Content: huge} })
	defer s.Close()
	dir := t.TempDir()
	cache, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := newTestLLM(t, s, func(c *LLMConfig) { c.Cache = cache }).Rank(context.Background(), Request{Prompt: "p", Candidates: cands})
	if err != nil || !res.Unranked || len(res.Raw) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, r := range res.Raw {
		if len(r) > MaxReplyBytes+100 || !strings.Contains(r, "reply cut after") || !utf8.ValidString(r) {
			t.Fatalf("a raw reply of %d bytes kept (valid UTF-8: %v)", len(r), utf8.ValidString(r))
		}
	}
	if reqs := s.Requests(); len(reqs[1].Messages[len(reqs[1].Messages)-2].Content) > MaxReplyBytes+100 {
		t.Fatal("the whole reply was sent back in the correction")
	}
	var size int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	if size > 8*MaxReplyBytes {
		t.Fatalf("the cache holds %d bytes for two requests", size)
	}
}
