package openaiapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/cyclealign/cyclealign/internal/chat"
)

// ChatRequest is POST /chat/completions.
type ChatRequest struct {
	Model       string         `json:"model"`
	Messages    []chat.Message `json:"messages"`
	Temperature *float64       `json:"temperature,omitempty"`
	MaxTokens   int            `json:"max_tokens,omitempty"`
}

// Usage is a reply's token counts.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// ChatResponse is the part of a chat completion the program reads.
type ChatResponse struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

// Chat asks for a chat completion and returns its first choice's text ("" when it has none:
// the caller judges an empty answer).
func (c *Client) Chat(ctx context.Context, req ChatRequest) (string, *ChatResponse, error) {
	var resp ChatResponse
	if err := c.Do(ctx, http.MethodPost, "/chat/completions", req, &resp); err != nil {
		return "", nil, err
	}
	text := ""
	if len(resp.Choices) > 0 && resp.Choices[0].Message.Content != nil {
		text = *resp.Choices[0].Message.Content
	}
	return text, &resp, nil
}

// CompletionRequest is POST /completions; Prompt is a text or a list of token ids.
type CompletionRequest struct {
	Model       string   `json:"model"`
	Prompt      any      `json:"prompt"`
	N           int      `json:"n,omitempty"`
	MaxTokens   int      `json:"max_tokens"`
	Temperature float64  `json:"temperature"`
	TopP        float64  `json:"top_p,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
	Stop        []string `json:"stop,omitempty"`
}

// Choice is one completion: its text, and why it ended.
type Choice struct {
	Text         string
	FinishReason string
}

// Completions asks for req.N (at least 1) completions and checks the reply holds exactly that
// many distinct choices, each with a text: a server that answers otherwise is named as wrong.
func (c *Client) Completions(ctx context.Context, req CompletionRequest) ([]Choice, Usage, error) {
	n := max(1, req.N)
	var resp struct {
		Choices []struct {
			Index        int     `json:"index"`
			Text         *string `json:"text"`
			FinishReason string  `json:"finish_reason"`
		} `json:"choices"`
		Usage Usage `json:"usage"`
	}
	url := strings.TrimSuffix(c.o.URL, "/") + "/completions"
	if err := c.DoURL(ctx, http.MethodPost, url, req, &resp); err != nil {
		return nil, Usage{}, err
	}
	bad := func(format string, args ...any) error {
		return &Error{Method: http.MethodPost, URL: url, Status: http.StatusOK, Msg: fmt.Sprintf(format, args...), Attempts: 1}
	}
	if len(resp.Choices) != n {
		return nil, Usage{}, bad("%d choices for n=%d", len(resp.Choices), n)
	}
	out := make([]Choice, n)
	seen := make([]bool, n)
	for _, ch := range resp.Choices {
		switch {
		case ch.Index < 0 || ch.Index >= n:
			return nil, Usage{}, bad("choice index %d for n=%d", ch.Index, n)
		case seen[ch.Index]:
			return nil, Usage{}, bad("choice index %d appears twice", ch.Index)
		case ch.Text == nil:
			return nil, Usage{}, bad("choice %d has no text (null or missing)", ch.Index)
		}
		seen[ch.Index] = true
		out[ch.Index] = Choice{Text: *ch.Text, FinishReason: ch.FinishReason}
	}
	return out, resp.Usage, nil
}

// Models lists the served model ids (GET /models).
func (c *Client) Models(ctx context.Context) ([]string, error) {
	var resp struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := c.Do(ctx, http.MethodGet, "/models", nil, &resp); err != nil {
		return nil, err
	}
	ids := make([]string, len(resp.Data))
	for i, d := range resp.Data {
		ids[i] = d.ID
	}
	return ids, nil
}

// LoadAdapter asks the server to load the PEFT adapter at path as name (vLLM needs
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora).
func (c *Client) LoadAdapter(ctx context.Context, name, path string) error {
	return c.Do(ctx, http.MethodPost, "/load_lora_adapter", map[string]string{"lora_name": name, "lora_path": path}, nil)
}

// UnloadAdapter asks the server to drop the adapter name.
func (c *Client) UnloadAdapter(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodPost, "/unload_lora_adapter", map[string]string{"lora_name": name}, nil)
}

// UpdateWeights asks an SGLang server to reload its weights from the HF directory path.
func (c *Client) UpdateWeights(ctx context.Context, path string) error {
	// SGLang serves it beside /v1, not under it.
	base := strings.TrimSuffix(strings.TrimSuffix(c.o.URL, "/"), "/v1")
	return c.DoURL(ctx, http.MethodPost, base+"/update_weights_from_disk", map[string]string{"model_path": path}, nil)
}
