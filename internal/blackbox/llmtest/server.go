// Package llmtest is a loopback OpenAI-compatible chat-completions server for tests and the
// offline demo: it speaks the real wire format and plays scripted behaviour (rankings by a
// hidden preference, garbage, rate limits, errors, hangs, dropped connections). It stands in
// for a remote frontier model, the one part that cannot exist here.
package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Message is a chat message as received.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is a received chat-completions request.
type Request struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	Temperature *float64  `json:"temperature"`
	MaxTokens   int       `json:"max_tokens"`
	Header      http.Header
}

// Reply is what the script answers to one request.
type Reply struct {
	Content    string            // the assistant message
	Status     int               // non-2xx: an error in OpenAI's shape with Content as its message
	Header     map[string]string // extra headers (Retry-After)
	Delay      time.Duration     // answer after this long
	Hang       bool              // never answer (until the client gives up)
	Drop       bool              // close the connection without answering
	RawBody    string            // send this body verbatim instead of a JSON completion
	PromptToks int
}

// Script decides the reply to the n-th request (0-based).
type Script func(n int, req Request) Reply

// Server is a running fake endpoint; URL() + "/v1" is its API base.
type Server struct {
	*httptest.Server
	script Script
	mu     sync.Mutex
	reqs   []Request
}

// New starts a server on loopback.
func New(script Script) *Server {
	s := &Server{script: script}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	return s
}

// BaseURL is the API base clients are configured with.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/models" && r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"judge","object":"model","created":0,"owned_by":"llmtest"}]}`)
		return
	}
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return
	}
	req.Header = r.Header.Clone()
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	rep := s.script(n, req)
	if rep.Hang {
		<-r.Context().Done()
		return
	}
	if rep.Delay > 0 {
		select {
		case <-time.After(rep.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if rep.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
	}
	for k, v := range rep.Header {
		w.Header().Set(k, v)
	}
	if rep.Status != 0 && rep.Status/100 != 2 {
		writeError(w, rep.Status, rep.Content)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if rep.RawBody != "" {
		io.WriteString(w, rep.RawBody)
		return
	}
	pt := rep.PromptToks
	if pt == 0 {
		for _, m := range req.Messages {
			pt += (len(m.Content) + 3) / 4
		}
	}
	ct := (len(rep.Content) + 3) / 4
	json.NewEncoder(w).Encode(map[string]any{
		"id": fmt.Sprintf("chatcmpl-%d", n), "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": rep.Content}}},
		"usage": map[string]any{"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
	})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	typ := "invalid_request_error"
	if status == http.StatusTooManyRequests {
		typ = "rate_limit_error"
	} else if status >= 500 {
		typ = "server_error"
	}
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": nil, "param": nil}})
}

var candidateLine = regexp.MustCompile(`(?m)^\[(\d+)\] (.*)$`)

// Candidates extracts the labelled candidates of the last user message, in label order.
func Candidates(req Request) []string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role != "user" {
			continue
		}
		var out []string
		for _, m := range candidateLine.FindAllStringSubmatch(req.Messages[i].Content, -1) {
			if k, _ := strconv.Atoi(m[1]); k == len(out)+1 {
				out = append(out, m[2])
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// RankBy answers every ranking request with the order that less puts first (a stable sort of
// the shown labels), formatted as "[a] > [b] > ...".
func RankBy(less func(a, b string) bool) Script {
	return func(_ int, req Request) Reply {
		return Reply{Content: FormatRanking(Order(Candidates(req), less))}
	}
}

// Order returns the labels (1-based) of cands sorted by less, stable.
func Order(cands []string, less func(a, b string) bool) []int {
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return less(cands[idx[i]], cands[idx[j]]) })
	for i := range idx {
		idx[i]++
	}
	return idx
}

// FormatRanking writes labels as "[a] > [b] > ...".
func FormatRanking(labels []int) string {
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = "[" + strconv.Itoa(l) + "]"
	}
	return strings.Join(parts, " > ")
}
