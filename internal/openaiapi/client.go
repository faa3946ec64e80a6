// Package openaiapi is the one client of OpenAI-compatible endpoints (OpenAI, vLLM, SGLang,
// llama.cpp's server, cyclealign serve): chat completions for the black-box ranker,
// completions with token ids for generation on an inference server and with text for a served
// model under evaluation, the runtime LoRA and weight-update endpoints, and the model list.
// Every request goes through one retry policy (429, 5xx, timeouts and broken connections are
// retried with exponential back-off and jitter, honouring Retry-After; other answers fail at
// once), one bound on requests in flight, and fails with one error type naming the URL.
package openaiapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configure a Client; zero values take the defaults.
type Options struct {
	URL         string        // API base as given to the OpenAI SDK, e.g. http://localhost:8000/v1
	Key         string        // bearer token ("" sends none); never logged or written
	Timeout     time.Duration // one attempt, reading the reply included (default 120s)
	MaxAttempts int           // attempts per request, the first included (default 6)
	BaseDelay   time.Duration // first back-off (default 1s), doubled each retry, with jitter
	MaxDelay    time.Duration // back-off ceiling, Retry-After included (default 60s)
	Concurrency int           // requests in flight (default 8)
	HTTP        *http.Client  // default: a client without its own timeout (Timeout bounds each attempt)
}

// Client speaks to one OpenAI-compatible server; it is safe for concurrent use.
type Client struct {
	o   Options
	sem chan struct{}
}

// New returns a client with o's settings and the defaults for the rest.
func New(o Options) *Client {
	o.Timeout = cmp.Or(o.Timeout, 120*time.Second)
	o.MaxAttempts = max(1, cmp.Or(o.MaxAttempts, 6))
	o.BaseDelay = cmp.Or(o.BaseDelay, time.Second)
	o.MaxDelay = cmp.Or(o.MaxDelay, 60*time.Second)
	o.Concurrency = cmp.Or(o.Concurrency, 8)
	if o.HTTP == nil {
		o.HTTP = &http.Client{}
	}
	return &Client{o: o, sem: make(chan struct{}, o.Concurrency)}
}

// WithAttempts returns the client with another number of attempts per request, sharing the
// bound on requests in flight (a reachability check is asked once).
func (c *Client) WithAttempts(n int) *Client {
	cp := *c
	cp.o.MaxAttempts = max(1, n)
	return &cp
}

// URL is the API base the client speaks to.
func (c *Client) URL() string { return c.o.URL }

// Error is a request that failed: its URL, the HTTP status (0 when no answer came), the
// server's message (never the key) and the attempts made.
type Error struct {
	Method, URL string
	Status      int
	Msg         string
	Attempts    int
	Err         error // the transport's error when no answer came
}

func (e *Error) Error() string {
	what := fmt.Sprintf("%s %s", e.Method, e.URL)
	if e.Attempts > 1 {
		what += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	if e.Status == 0 {
		return fmt.Sprintf("%s: %v", what, e.Err)
	}
	return fmt.Sprintf("%s: HTTP %d: %.300s", what, e.Status, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNoEndpoint marks a server that lacks the route asked for (405, or a 404 without an
// OpenAI-style error, as FastAPI answers for a route it does not have).
var ErrNoEndpoint = errors.New("the server has no such endpoint")

// Transient reports whether err may pass once the server is back: no answer, a 5xx, a 429, or a
// 404 for a model (a restarted server has lost its adapters). Other answers are the request's
// fault.
func Transient(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return !errors.Is(err, context.Canceled)
	}
	return e.Status == 0 || e.Status == http.StatusNotFound && !errors.Is(err, ErrNoEndpoint) || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// StatusOf is the HTTP status of a failed request (0: none).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Do sends a JSON request (body nil: none) to path under the API base and decodes a 200's
// JSON reply into into (nil: the reply is read and dropped).
func (c *Client) Do(ctx context.Context, method, path string, body, into any) error {
	return c.DoURL(ctx, method, strings.TrimSuffix(c.o.URL, "/")+path, body, into)
}

// DoURL is Do with a full URL (SGLang serves /update_weights_from_disk beside /v1).
func (c *Client) DoURL(ctx context.Context, method, url string, body, into any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	for attempt := 1; ; attempt++ {
		status, header, reply, err := c.once(ctx, method, url, payload)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && status == http.StatusOK {
			if into == nil {
				return nil
			}
			if err := json.Unmarshal(reply, into); err != nil {
				return &Error{Method: method, URL: url, Status: status, Msg: "malformed reply: " + err.Error(), Attempts: attempt}
			}
			return nil
		}
		e := &Error{Method: method, URL: url, Status: status, Attempts: attempt, Err: err}
		if err == nil {
			e.Msg = message(reply, status)
			if status == http.StatusMethodNotAllowed || status == http.StatusNotFound && !isAPIError(reply) {
				e.Err = ErrNoEndpoint
			}
		}
		delay, retry := c.backoff(status, header, err, attempt)
		if !retry || attempt >= c.o.MaxAttempts {
			return e
		}
		slog.Warn("request failed, retrying", "url", url, "attempt", attempt, "in", delay.Round(time.Millisecond), "error", e)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// once makes one attempt within Timeout, reading the whole reply (at most 64 MiB).
func (c *Client) once(ctx context.Context, method, url string, payload []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.o.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.Key)
	}
	resp, err := c.o.HTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

// backoff says whether an attempt is retried and after how long: 429 and 5xx (Retry-After
// honoured), timeouts and broken connections, with exponential back-off and jitter.
func (c *Client) backoff(status int, header http.Header, err error, attempt int) (time.Duration, bool) {
	switch {
	case err != nil:
		var ne net.Error
		if !(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || errors.Is(err, syscall.ECONNRESET) ||
			errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "EOF")) {
			return 0, false
		}
	case status == http.StatusTooManyRequests || status >= 500:
		if d, ok := retryAfter(header.Get("Retry-After")); ok {
			return min(d, c.o.MaxDelay), true
		}
	default:
		return 0, false
	}
	backoff := min(float64(c.o.MaxDelay), float64(c.o.BaseDelay)*math.Pow(2, float64(attempt-1)))
	return time.Duration(backoff * (0.5 + 0.5*rand.Float64())), true
}

func retryAfter(h string) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(h, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(0, time.Until(t)), true
	}
	return 0, false
}

// message is the server's own message: OpenAI's {"error": {"message"}}, vLLM's flat
// {"message"}, FastAPI's {"detail"}, or the body's text.
func message(b []byte, status int) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(b, &e) == nil {
		var nested struct{ Message string }
		if json.Unmarshal(e.Error, &nested) == nil && nested.Message != "" {
			return nested.Message
		}
		var flat string
		if json.Unmarshal(e.Error, &flat) == nil && flat != "" {
			return flat
		}
		if e.Message != "" {
			return e.Message
		}
		if e.Detail != nil {
			return fmt.Sprint(e.Detail)
		}
	}
	if t := strings.TrimSpace(string(b)); t != "" {
		return http.StatusText(status) + ": " + t
	}
	return http.StatusText(status) + " (the server said nothing more)"
}

// isAPIError reports whether a body is an API's error object rather than a missing route's.
func isAPIError(b []byte) bool {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	return json.Unmarshal(b, &e) == nil && (len(e.Error) > 0 || e.Message != "")
}
