// Package serve is an OpenAI-compatible HTTP server for a white-box model: /v1/models,
// /v1/chat/completions (HH dialogue format or a template) and /v1/completions (with logprobs
// and echo, so clients can score text), streaming by server-sent events, bearer-token auth,
// request limits, dynamic batching of concurrent requests, and vLLM's runtime LoRA API
// (/v1/load_lora_adapter, /v1/unload_lora_adapter; several adapters resident, selected by
// "model"), so cyclealign's remote generation is tested end to end against it.
package serve

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
)

// Options configure a server.
type Options struct {
	ModelName    string         // the id clients use
	Token        string         // bearer token; "" disables auth
	MaxBodyBytes int64          // request body limit (default 1 MiB)
	MaxTokens    int            // max_tokens limit (default 1024)
	MaxRows      int            // rows decoded together; 1 turns batching off (default 32)
	Window       time.Duration  // how long the batcher waits for more requests (default 5ms)
	Chat         *chat.Template // chat rendering (--chat-template); nil: the model's own, else the HH format
	// TruncatePrompts drops the oldest tokens (after the first) of a prompt too long for the
	// model's positions instead of refusing it.
	TruncatePrompts bool
	HeaderTimeout   time.Duration // to read a request's headers (default 10s)
	BodyTimeout     time.Duration // to read a request's body (default 30s)
	IdleTimeout     time.Duration // an idle keep-alive connection is closed after (default 2m)
	// LoadAdapter returns the base model with the PEFT adapter at path applied, for
	// /v1/load_lora_adapter; nil refuses loads.
	LoadAdapter func(path string) (*model.Model, error)
	MaxAdapters int // adapters resident at once (default 8)
	MaxLoRARank int // the largest rank an adapter may have (default 16, as vLLM's --max-lora-rank)
}

// Server handles the API for one base model and the LoRA adapters loaded onto it at run time.
type Server struct {
	m     *model.Model // the base: its tokenizer and positions serve every adapter too
	o     Options
	base  *entry
	mux   *http.ServeMux
	reqID atomic.Int64

	mu        sync.Mutex
	adapters  map[string]*entry
	loading   map[string]bool // adapter names being loaded: they hold a place under --max-loras
	decoded   atomic.Int64
	closeOnce sync.Once
}

// entry is one servable model: the base, or the base with an adapter, with its own batcher.
// refs counts the requests using it (under Server.mu); an unloaded adapter's batcher stops, and
// its model can be collected, when the last of them ends.
type entry struct {
	name, path string
	m          *model.Model
	b          *batcher
	refs       int
	unloaded   bool
}

// New builds a server; Close stops its batcher.
func New(m *model.Model, o Options) *Server {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 1024
	}
	if o.MaxRows <= 0 {
		o.MaxRows = 32
	}
	if o.Window <= 0 {
		o.Window = 5 * time.Millisecond
	}
	if o.ModelName == "" {
		o.ModelName = "cyclealign"
	}
	if o.MaxAdapters <= 0 {
		o.MaxAdapters = 8
	}
	if o.MaxLoRARank <= 0 {
		o.MaxLoRARank = 16
	}
	o.HeaderTimeout = cmp.Or(o.HeaderTimeout, 10*time.Second)
	o.BodyTimeout = cmp.Or(o.BodyTimeout, 30*time.Second)
	o.IdleTimeout = cmp.Or(o.IdleTimeout, 2*time.Minute)
	s := &Server{m: m, o: o, mux: http.NewServeMux(), adapters: map[string]*entry{}, loading: map[string]bool{}}
	s.base = &entry{name: o.ModelName, m: m, b: newBatcher(m, o.MaxRows, o.Window, &s.decoded)}
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("POST /v1/load_lora_adapter", s.loadAdapter)
	s.mux.HandleFunc("POST /v1/unload_lora_adapter", s.unloadAdapter)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chat)
	s.mux.HandleFunc("POST /v1/completions", s.completions)
	return s
}

// GeneratedTokens counts the tokens the server has decoded since it started.
func (s *Server) GeneratedTokens() int64 { return s.decoded.Load() }

// Close stops the batchers; call it after the HTTP server has shut down. Calling it again does
// nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.base.b.close()
		for _, e := range s.adapters {
			e.b.close()
		}
	})
}

// HTTPServer wraps the handler in an http.Server with the header and idle timeouts. There is
// deliberately no ReadTimeout: it would also cut long streamed replies; the body has its own
// deadline (ServeHTTP).
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{Handler: s, ReadHeaderTimeout: s.o.HeaderTimeout, IdleTimeout: s.o.IdleTimeout}
}

// LoadToken returns the bearer token from a file or an environment variable. An empty or
// blank source is an error rather than a server without auth.
func LoadToken(env, file string) (string, error) {
	switch {
	case file != "":
		b, err := files.ReadFile(file)
		if err != nil {
			return "", err
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--token-file %s: the file is empty; refusing to serve without auth", file)
		}
		return tok, nil
	case env != "":
		tok := strings.TrimSpace(os.Getenv(env))
		if tok == "" {
			return "", fmt.Errorf("--token-env %s: the variable is empty; refusing to serve without auth", env)
		}
		return tok, nil
	}
	return "", nil
}

// ServeHTTP logs the request, applies auth, the body limit and the body deadline, then routes.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &accessLog{ResponseWriter: rw}
	r = r.WithContext(context.WithValue(r.Context(), logKey{}, w))
	defer func() {
		slog.Info("request", "method", r.Method, "path", r.URL.Path, "status", w.status, "prompt_tokens", w.prompt,
			"completion_tokens", w.output, "ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
	}()
	if s.o.Token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.Token)) != 1 {
			apiError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong bearer token (want the header Authorization: Bearer TOKEN)")
			return
		}
	}
	// A client trickling its body must not hold a connection for ever; decode lifts the
	// deadline once the body is read.
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.o.BodyTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
	s.mux.ServeHTTP(w, r)
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	apiErrorCode(w, status, typ, "", "", msg)
}

// apiErrorCode writes OpenAI's error shape with its code and param ("" is null).
func apiErrorCode(w http.ResponseWriter, status int, typ, code, param, msg string) {
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": orNull(param), "code": orNull(code)}})
}

// lookup returns the served model (the base, or a resident adapter) that name selects, held
// until release, or answers 404 model_not_found, as OpenAI and vLLM do.
func (s *Server) lookup(w http.ResponseWriter, name string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == s.o.ModelName {
		return s.base
	}
	if e, ok := s.adapters[name]; ok {
		e.refs++
		return e
	}
	apiErrorCode(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
		fmt.Sprintf("The model `%s` does not exist; this server serves `%s` (GET /v1/models).", name, strings.Join(s.names(), "`, `")))
	return nil
}

// accessLog records one line per request; it never records the Authorization header.
type accessLog struct {
	http.ResponseWriter
	status         int
	prompt, output int // tokens, set by the handlers
}

func (a *accessLog) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *accessLog) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (deadlines, flushing).
func (a *accessLog) Unwrap() http.ResponseWriter { return a.ResponseWriter }

func (a *accessLog) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type logKey struct{}

// countTokens records a request's token counts for its access-log line.
func countTokens(r *http.Request, prompt, output int) {
	if a, ok := r.Context().Value(logKey{}).(*accessLog); ok {
		a.prompt, a.output = prompt, output
	}
}

// decode reads a JSON body, answering 413 or 400 in OpenAI's error shape on failure.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(r.Body).Decode(v)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.Header().Set("Connection", "close")
			apiError(w, http.StatusRequestTimeout, "invalid_request_error", "request body not received in time")
			return false
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("request body over %d bytes", tooBig.Limit))
			return false
		}
		var bad *chat.ContentError
		if errors.As(err, &bad) { // well-formed JSON that a field's own decoding refused
			apiError(w, http.StatusBadRequest, "invalid_request_error", bad.Msg)
			return false
		}
		apiError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		return false
	}
	// The body is in: no deadline while the reply is generated and streamed.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	return true
}

// release ends a request's hold on an entry taken by lookup.
func (s *Server) release(e *entry) {
	if e == s.base {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.unloaded {
		e.retire()
	}
}

// retire stops an unloaded adapter's batcher and, once it has let go of the model, hands the
// freed memory back to the system: without that, the heap's slack after a few load/unload
// cycles of a large model looks like a leak to anyone watching RSS. Callers hold Server.mu.
func (e *entry) retire() {
	e.b.close()
	go func() {
		<-e.b.stopped
		debug.FreeOSMemory()
	}()
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	data := []any{map[string]any{"id": s.o.ModelName, "object": "model", "created": 0, "owned_by": "cyclealign", "root": s.o.ModelName}}
	s.mu.Lock()
	for _, name := range s.names()[1:] {
		data = append(data, map[string]any{"id": name, "object": "model", "created": 0, "owned_by": "cyclealign",
			"root": s.adapters[name].path, "parent": s.o.ModelName})
	}
	s.mu.Unlock()
	writeJSON(w, map[string]any{"object": "list", "data": data})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// sampling are the generation parameters both endpoints share.
type sampling struct {
	N             *int            `json:"n"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	MaxTokens     *int            `json:"max_tokens"`
	MaxCompl      *int            `json:"max_completion_tokens"`
	Stop          json.RawMessage `json:"stop"`
	Seed          *int64          `json:"seed"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
}

// streamOptions is OpenAI's stream_options.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// options turns request parameters into generation options, or a message for a 400.
func (s *Server) options(p sampling, defMax int) (generate.Options, int, string) {
	o := generate.Options{N: 1, Temperature: 1, TopP: 1, MaxNewTokens: defMax}
	n := 1
	if p.N != nil {
		n = *p.N
	}
	if n < 1 || n > 16 {
		return o, 0, "n must be between 1 and 16"
	}
	if p.Temperature != nil {
		if *p.Temperature < 0 || *p.Temperature > 2 {
			return o, 0, "temperature must be between 0 and 2"
		}
		o.Temperature = *p.Temperature
		o.Greedy = *p.Temperature == 0
	}
	if p.TopP != nil {
		if *p.TopP <= 0 || *p.TopP > 1 {
			return o, 0, "top_p must be in (0, 1]"
		}
		o.TopP = *p.TopP
	}
	if p.MaxCompl != nil {
		p.MaxTokens = p.MaxCompl
	}
	if p.MaxTokens != nil {
		o.MaxNewTokens = *p.MaxTokens
	}
	if o.MaxNewTokens < 0 || o.MaxNewTokens > s.o.MaxTokens {
		return o, 0, fmt.Sprintf("max_tokens must be between 0 and %d", s.o.MaxTokens)
	}
	if len(p.Stop) > 0 && string(p.Stop) != "null" {
		var one string
		if json.Unmarshal(p.Stop, &one) == nil {
			o.Stop = []string{one}
		} else if json.Unmarshal(p.Stop, &o.Stop) != nil || len(o.Stop) > 4 {
			return o, 0, "stop must be a string or a list of up to 4 strings"
		}
	}
	if p.Seed != nil {
		o.Seed = uint64(*p.Seed)
	} else {
		o.Seed = rand.Uint64()
	}
	return o, n, ""
}

// generateN runs n samples of one prompt through the batcher, concurrently so they share a
// batch. onToken (for streaming) is called with the choice index.
func (s *Server) generateN(ctx context.Context, e *entry, prompt []int, o generate.Options, n int, onToken func(i int, c *generate.Completion)) ([]generate.Completion, error) {
	prompt, err := s.fit(prompt, o)
	if err != nil {
		return nil, err
	}
	out := make([]generate.Completion, n)
	errs := make([]error, n)
	done := make(chan int, n)
	for i := 0; i < n; i++ {
		row := generate.Row{Prompt: prompt, Opt: o, RNG: rand.New(rand.NewPCG(o.Seed, uint64(i)))}
		if onToken != nil {
			row.OnToken = func(c *generate.Completion) { onToken(i, c) }
		}
		go func(i int) {
			out[i], errs[i] = e.b.submit(ctx, row)
			done <- i
		}(i)
	}
	for i := 0; i < n; i++ {
		<-done
	}
	return out, errors.Join(errs...)
}

// fit returns the prompt as it will be decoded (cut from its oldest tokens with
// --truncate-prompts), or a bad request when it cannot be: checked before a stream starts, so
// that a request that cannot run gets a 400 rather than a 200 and an error event.
func (s *Server) fit(prompt []int, o generate.Options) ([]int, error) {
	if room := s.m.Config.MaxPositions - o.MaxNewTokens; len(prompt) > room && s.o.TruncatePrompts && room >= 2 {
		prompt, _ = model.FitContext(prompt, nil, room)
	}
	if len(prompt)+o.MaxNewTokens > s.m.Config.MaxPositions {
		return nil, &badRequest{fmt.Sprintf("prompt (%d tokens) plus max_tokens (%d) exceeds the model's %d positions: ask for fewer max_tokens "+
			"(align: --blackbox-max-tokens), or start the server with --truncate-prompts to cut prompts from their oldest tokens",
			len(prompt), o.MaxNewTokens, s.m.Config.MaxPositions)}
	}
	if err := (generate.Row{Prompt: prompt, Opt: o}).Check(s.m); err != nil {
		return nil, &badRequest{err.Error()}
	}
	return prompt, nil
}

type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func (s *Server) fail(w http.ResponseWriter, err error) {
	var br *badRequest
	if errors.As(err, &br) {
		apiError(w, http.StatusBadRequest, "invalid_request_error", br.msg)
		return
	}
	apiError(w, http.StatusInternalServerError, "server_error", err.Error())
}

func (s *Server) id(prefix string) string { return fmt.Sprintf("%s-%d", prefix, s.reqID.Add(1)) }
