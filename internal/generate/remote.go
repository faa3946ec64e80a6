package generate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Remote samples completions from an OpenAI-compatible inference server (vLLM, SGLang,
// cyclealign serve) through POST /v1/completions, and moves the server's weights with the
// runtime LoRA API (vLLM, SGLang, cyclealign serve) or SGLang's /update_weights_from_disk.
type Remote struct {
	URL         string        // API base, ending in /v1
	Key         string        // bearer token ("" sends none)
	Concurrency int           // requests in flight (0: 8)
	Timeout     time.Duration // of one request, reply included (0: 10 minutes)
	HTTP        *http.Client
}

// ErrNoEndpoint is returned when the server lacks an endpoint (HTTP 404 or 405 on its route).
var ErrNoEndpoint = errors.New("the server has no such endpoint")

// Transient reports whether err may pass once the server is back: a refused connection, a 404
// for the model (a restarted server has lost its adapters), a 5xx. A 400 is the request's fault.
func Transient(err error) bool {
	var he *HTTPError
	if !errors.As(err, &he) {
		return true
	}
	return he.Status == http.StatusNotFound || he.Status >= 500
}

// HTTPError is a reply other than 200, with the server's message.
type HTTPError struct {
	URL    string
	Status int
	Msg    string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("POST %s: HTTP %d: %.300s", e.URL, e.Status, e.Msg)
}

// Text samples opt.N completions of each prompt from model (text and finish reason), one
// request a prompt, each with its own seed derived from opt.Seed, and sums the completion
// tokens the server reports (usage). Prompts go as token ids (the completions API takes them),
// so the server samples after exactly the tokens the white-box scores.
func (r *Remote) Text(ctx context.Context, model string, prompts [][]int, opt Options) ([][]Completion, int, error) {
	out := make([][]Completion, len(prompts))
	tokens := make([]int, len(prompts))
	errs := make([]error, len(prompts))
	n := r.Concurrency
	if n <= 0 {
		n = 8
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i], tokens[i], errs[i] = r.complete(ctx, model, p, opt, opt.Seed+uint64(i)*0x9e3779b97f4a7c15)
		}()
	}
	wg.Wait()
	total := 0
	for _, t := range tokens {
		total += t
	}
	return out, total, errors.Join(errs...)
}

func (r *Remote) complete(ctx context.Context, model string, prompt []int, opt Options, seed uint64) ([]Completion, int, error) {
	temp := opt.Temperature
	if opt.Greedy {
		temp = 0
	}
	body := map[string]any{"model": model, "prompt": prompt, "n": opt.N, "max_tokens": opt.MaxNewTokens,
		"temperature": temp, "top_p": opt.TopP, "seed": int64(seed >> 1)}
	if len(opt.Stop) > 0 {
		body["stop"] = opt.Stop
	}
	var resp struct {
		Choices []struct {
			Index        int     `json:"index"`
			Text         *string `json:"text"`
			FinishReason string  `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := r.post(ctx, "/completions", body, &resp); err != nil {
		return nil, 0, err
	}
	if len(resp.Choices) != opt.N {
		return nil, 0, fmt.Errorf("generation server %s/completions: %d choices for n=%d", r.URL, len(resp.Choices), opt.N)
	}
	// A reply that is not n distinct texts is the server's fault, never an empty candidate.
	comps := make([]Completion, opt.N)
	seen := make([]bool, opt.N)
	for _, c := range resp.Choices {
		switch {
		case c.Index < 0 || c.Index >= opt.N:
			return nil, 0, fmt.Errorf("generation server %s/completions: choice index %d for n=%d", r.URL, c.Index, opt.N)
		case seen[c.Index]:
			return nil, 0, fmt.Errorf("generation server %s/completions: choice index %d appears twice", r.URL, c.Index)
		case c.Text == nil:
			return nil, 0, fmt.Errorf("generation server %s/completions: choice %d has no text (null or missing)", r.URL, c.Index)
		}
		seen[c.Index] = true
		comps[c.Index] = Completion{Text: *c.Text, FinishReason: c.FinishReason}
	}
	return comps, resp.Usage.CompletionTokens, nil
}

// LoadAdapter asks the server to load the PEFT adapter at path as name (vLLM needs
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora).
func (r *Remote) LoadAdapter(ctx context.Context, name, path string) error {
	return r.post(ctx, "/load_lora_adapter", map[string]string{"lora_name": name, "lora_path": path}, nil)
}

// UnloadAdapter asks the server to drop the adapter name.
func (r *Remote) UnloadAdapter(ctx context.Context, name string) error {
	return r.post(ctx, "/unload_lora_adapter", map[string]string{"lora_name": name}, nil)
}

// UpdateWeights asks an SGLang server to reload its weights from the HF directory path.
func (r *Remote) UpdateWeights(ctx context.Context, path string) error {
	// SGLang serves it beside /v1, not under it.
	return r.postURL(ctx, strings.TrimSuffix(strings.TrimSuffix(r.URL, "/"), "/v1")+"/update_weights_from_disk", map[string]string{"model_path": path}, nil)
}

// Ready asks for the model list: nil once the server answers.
func (r *Remote) Ready(ctx context.Context) error {
	ctx, cancel := r.timeout(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(r.URL, "/")+"/models", nil)
	if err != nil {
		return err
	}
	r.auth(req)
	resp, err := r.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s/models: HTTP %d", r.URL, resp.StatusCode)
	}
	return nil
}

func (r *Remote) client() *http.Client {
	if r.HTTP != nil {
		return r.HTTP
	}
	return http.DefaultClient
}

// timeout bounds one request, reading the reply included: a server that stalls mid-body (a
// body shorter than its Content-Length) fails the request instead of hanging the run.
func (r *Remote) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cmp.Or(r.Timeout, 10*time.Minute))
}

func (r *Remote) auth(req *http.Request) {
	if r.Key != "" {
		req.Header.Set("Authorization", "Bearer "+r.Key)
	}
}

func (r *Remote) post(ctx context.Context, path string, body, into any) error {
	return r.postURL(ctx, strings.TrimSuffix(r.URL, "/")+path, body, into)
}

// postURL posts JSON; an error names the URL and carries the server's message.
func (r *Remote) postURL(ctx context.Context, url string, body, into any) error {
	b, _ := json.Marshal(body)
	ctx, cancel := r.timeout(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	r.auth(req)
	resp, err := r.client().Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		text := strings.TrimSpace(string(msg))
		// OpenAI's shape nests the message under "error"; vLLM's is flat ({"object": "error",
		// "message": ...}); FastAPI's answer for a route it lacks is {"detail": "Not Found"}.
		var e struct {
			Error   struct{ Message string } `json:"error"`
			Message string                   `json:"message"`
		}
		apiMsg := ""
		if json.Unmarshal(msg, &e) == nil {
			apiMsg = cmp.Or(e.Error.Message, e.Message)
		}
		if apiMsg != "" {
			text = apiMsg
		}
		err := &HTTPError{URL: url, Status: resp.StatusCode, Msg: text}
		if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotFound && apiMsg == "" {
			return fmt.Errorf("%w: %w", ErrNoEndpoint, err)
		}
		return err
	}
	if into == nil {
		return nil
	}
	if err := json.Unmarshal(msg, into); err != nil {
		return fmt.Errorf("POST %s: malformed reply: %w", url, err)
	}
	return nil
}
