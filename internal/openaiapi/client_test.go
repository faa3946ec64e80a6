package openaiapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve answers the n-th request (0-based) with reply(n).
func serve(t *testing.T, reply func(n int, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reply(int(n.Add(1))-1, w, r) }))
	t.Cleanup(s.Close)
	return s, &n
}

func fast(url string) Options {
	return Options{URL: url, BaseDelay: time.Millisecond, MaxDelay: time.Second, Timeout: 300 * time.Millisecond}
}

// One retry policy: 429 (Retry-After honoured), 5xx, a hang past the timeout and a dropped
// connection are retried; a 400 fails at once with the server's message; attempts are bounded.
func TestRetryPolicy(t *testing.T) {
	ok := func(w http.ResponseWriter) {
		w.Write([]byte(`{"choices": [{"message": {"content": "fine"}}], "usage": {"prompt_tokens": 3}}`))
	}
	for _, c := range []struct {
		name    string
		first   func(w http.ResponseWriter)
		minWait time.Duration
	}{
		{"429 with Retry-After", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "0.3")
			w.WriteHeader(429)
			w.Write([]byte(`{"error": {"message": "slow down"}}`))
		}, 300 * time.Millisecond},
		{"503", func(w http.ResponseWriter) { w.WriteHeader(503) }, 0},
		{"hang", func(w http.ResponseWriter) { time.Sleep(time.Second) }, 300 * time.Millisecond},
		{"dropped", func(w http.ResponseWriter) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, 0},
	} {
		s, n := serve(t, func(i int, w http.ResponseWriter, _ *http.Request) {
			if i == 0 {
				c.first(w)
				return
			}
			ok(w)
		})
		start := time.Now()
		text, resp, err := New(fast(s.URL)).Chat(context.Background(), ChatRequest{Model: "m"})
		if err != nil || text != "fine" || resp.Usage.PromptTokens != 3 || n.Load() != 2 || time.Since(start) < c.minWait {
			t.Errorf("%s: %q %v after %d requests and %v", c.name, text, err, n.Load(), time.Since(start))
		}
	}
	s, n := serve(t, func(int, http.ResponseWriter, *http.Request) {})
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.WriteHeader(400)
		w.Write([]byte(`{"object": "error", "message": "model m does not exist"}`))
	})
	_, _, err := New(fast(s.URL)).Chat(context.Background(), ChatRequest{Model: "m"})
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(err.Error(), "model m does not exist") || n.Load() != 1 || Transient(err) {
		t.Fatalf("400: %v after %d requests", err, n.Load())
	}
	s2, n2 := serve(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500); w.Write([]byte("down")) })
	o := fast(s2.URL)
	o.MaxAttempts = 3
	_, _, err = New(o).Chat(context.Background(), ChatRequest{Model: "m"})
	if err == nil || n2.Load() != 3 || !strings.Contains(err.Error(), "after 3 attempts") || !strings.Contains(err.Error(), "down") || !Transient(err) {
		t.Fatalf("bounded attempts: %v after %d requests", err, n2.Load())
	}
}

// A route the server lacks is ErrNoEndpoint; a 404 for a model (an API error) is not, and is
// transient (a restarted server lost its adapters); the key goes as a bearer token only.
func TestEndpointsAndKey(t *testing.T) {
	s, _ := serve(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer sk-secret":
			w.WriteHeader(401)
		case r.URL.Path == "/v1/load_lora_adapter":
			http.NotFound(w, r)
		case r.URL.Path == "/v1/completions":
			w.WriteHeader(404)
			w.Write([]byte(`{"error": {"message": "The model ` + "`a`" + ` does not exist."}}`))
		case r.URL.Path == "/update_weights_from_disk":
			w.Write([]byte(`{"success": true}`))
		default:
			w.Write([]byte(`{"data": [{"id": "base"}, {"id": "a"}]}`))
		}
	})
	o := fast(s.URL + "/v1")
	o.Key = "sk-secret"
	c := New(o)
	if ids, err := c.Models(context.Background()); err != nil || strings.Join(ids, ",") != "base,a" {
		t.Fatalf("models: %v %v", ids, err)
	}
	if err := c.LoadAdapter(context.Background(), "a", "/x"); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("no LoRA endpoint: %v", err)
	}
	_, _, err := c.Completions(context.Background(), CompletionRequest{Model: "a", Prompt: []int{1, 2}})
	if errors.Is(err, ErrNoEndpoint) || StatusOf(err) != 404 || !Transient(err) || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("a model's 404: %v", err)
	}
	if err := c.UpdateWeights(context.Background(), "/m"); err != nil {
		t.Fatalf("update beside /v1: %v", err)
	}
}

// The bound on requests in flight holds across concurrent callers.
func TestConcurrencyBound(t *testing.T) {
	var in, peak atomic.Int32
	s, _ := serve(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		cur := in.Add(1)
		defer in.Add(-1)
		for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte(`{"data": []}`))
	})
	o := fast(s.URL)
	o.Concurrency = 3
	c := New(o)
	done := make(chan error, 12)
	for range 12 {
		go func() { _, err := c.Models(context.Background()); done <- err }()
	}
	for range 12 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if peak.Load() > 3 {
		t.Fatalf("%d requests in flight with concurrency 3", peak.Load())
	}
}
