package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/cpu"
	"github.com/cyclealign/cyclealign/internal/generate"
)

type chatRequest struct {
	Model    string         `json:"model"`
	Messages []chat.Message `json:"messages"`
	// As vLLM reads them: a new assistant turn is opened unless the final message is to be
	// continued (a prefilled reply), and the two cannot both be set.
	AddGenerationPrompt  *bool `json:"add_generation_prompt"`
	ContinueFinalMessage bool  `json:"continue_final_message"`
	Logprobs             bool  `json:"logprobs"`
	TopLogprobs          *int  `json:"top_logprobs"`
	sampling
}

// chatTemplate is the template chat requests are rendered with: --chat-template, else the
// model's own, else none (the HH format).
func (s *Server) chatTemplate() *chat.Template {
	if s.o.Chat != nil {
		return s.o.Chat
	}
	return s.m.Chat
}

// prompt renders a chat request and encodes it. With a chat template it is rendered and encoded
// as apply_chat_template does (what vLLM serves): special tokens matched, no BOS added. In the
// HH format, "\n\nHuman: ...\n\nAssistant: ..." ending with "\n\nAssistant:", a system message
// first as plain text, the messages' contents are encoded as text, so special tokens a user
// typed stay text.
func (s *Server) prompt(req chatRequest) ([]int, error) {
	addGen := req.AddGenerationPrompt == nil || *req.AddGenerationPrompt
	if t := s.chatTemplate(); t != nil {
		if req.ContinueFinalMessage && addGen {
			return nil, &badRequest{"Cannot set both `continue_final_message` and `add_generation_prompt` to True."}
		}
		text, err := t.Render(req.Messages, addGen, req.ContinueFinalMessage)
		if err != nil {
			return nil, &badRequest{err.Error()}
		}
		return s.m.Tokenizer.Encode(text, false), nil
	}
	if req.ContinueFinalMessage || !addGen {
		return nil, &badRequest{"add_generation_prompt and continue_final_message need a chat template (the model has none; see --chat-template)"}
	}
	var b strings.Builder
	var spans [][2]int
	write := func(prefix, c string) {
		b.WriteString(prefix)
		spans = append(spans, [2]int{b.Len(), b.Len() + len(c)})
		b.WriteString(c)
	}
	for _, m := range req.Messages {
		switch m.Role {
		case "system", "developer":
			write("", m.Content)
		case "user":
			write("\n\nHuman: ", m.Content)
		case "assistant":
			write("\n\nAssistant: ", m.Content)
		default:
			return nil, &badRequest{fmt.Sprintf("unknown role %q", m.Role)}
		}
	}
	b.WriteString("\n\nAssistant:")
	return s.m.Tokenizer.EncodePlain(b.String(), true, spans), nil
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) {
		return
	}
	e := s.lookup(w, req.Model)
	if e == nil {
		return
	}
	defer s.release(e)
	if len(req.Messages) == 0 {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "messages must not be empty")
		return
	}
	opt, n, msg := s.options(req.sampling, 256)
	if msg != "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > maxTopLogprobs || !req.Logprobs {
			apiErrorCode(w, http.StatusBadRequest, "invalid_request_error", "", "top_logprobs",
				fmt.Sprintf("top_logprobs must be between 0 and %d, and needs logprobs: true", maxTopLogprobs))
			return
		}
		opt.TopLogprobs = *req.TopLogprobs
	}
	if req.Logprobs && req.Stream {
		apiErrorCode(w, http.StatusBadRequest, "invalid_request_error", "", "logprobs", "logprobs are not supported with stream")
		return
	}
	opt.Logprobs = req.Logprobs
	// The model's end tokens end every reply (generate stops at them); the HH format also
	// ends a turn where the next one would start.
	if len(opt.Stop) == 0 && s.chatTemplate() == nil {
		opt.Stop = []string{generate.DefaultStop}
	}
	prompt, err := s.prompt(req)
	if err != nil {
		s.fail(w, err)
		return
	}
	id, created := s.id("chatcmpl"), time.Now().Unix()
	if req.Stream {
		s.stream(w, r, e, prompt, opt, n, req.StreamOptions, func(i int, delta string, first bool, finish *string) map[string]any {
			d := map[string]any{}
			if first { // the role comes in each choice's first chunk, as OpenAI and vLLM send it
				d["role"] = "assistant"
			}
			if delta != "" || finish == nil {
				d["content"] = delta
			}
			return map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": e.name,
				"choices": []any{map[string]any{"index": i, "delta": d, "logprobs": nil, "finish_reason": finish}}}
		})
		return
	}
	comps, err := s.generateN(r.Context(), e, prompt, opt, n, nil)
	if err != nil {
		s.fail(w, err)
		return
	}
	var choices []any
	out := 0
	for i, c := range comps {
		out += len(c.IDs)
		text := c.Text
		if s.chatTemplate() == nil { // the HH format's "Assistant:" is followed by a space
			text = strings.TrimPrefix(text, " ")
		}
		choice := map[string]any{"index": i, "finish_reason": c.FinishReason, "logprobs": nil,
			"message": map[string]any{"role": "assistant", "content": text}}
		if req.Logprobs {
			choice["logprobs"] = s.chatLogprobs(c)
		}
		choices = append(choices, choice)
	}
	countTokens(r, len(prompt), out)
	writeJSON(w, map[string]any{"id": id, "object": "chat.completion", "created": created, "model": e.name,
		"choices": choices, "usage": usageOf(len(prompt), out)})
}

// maxTopLogprobs bounds top_logprobs (OpenAI's chat limit; vLLM's default max_logprobs).
const maxTopLogprobs = 20

// tokenText is what a token adds to the text, as vLLM reports tokens (not BPE symbols).
func (s *Server) tokenText(id int) string { return s.m.Tokenizer.Decode([]int{id}, false) }

// chatLogprobs renders a completion's tokens in the chat API's logprobs shape.
func (s *Server) chatLogprobs(c generate.Completion) map[string]any {
	entry := func(id int, lp float64) map[string]any {
		t := s.tokenText(id)
		b := []int{}
		for _, x := range []byte(t) {
			b = append(b, int(x))
		}
		return map[string]any{"token": t, "logprob": lp, "bytes": b}
	}
	content := []any{}
	for k, id := range c.IDs {
		e := entry(id, c.Logprobs[k])
		top := []any{}
		if k < len(c.Top) {
			for _, a := range c.Top[k] {
				top = append(top, entry(a.ID, a.Logprob))
			}
		}
		e["top_logprobs"] = top
		content = append(content, e)
	}
	return map[string]any{"content": content}
}

func usageOf(in, out int) map[string]int {
	return map[string]int{"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out}
}

// stream sends choices as server-sent events while they are generated. Text that may still
// turn into a stop string, or ends in an incomplete character, is held back until decided.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, e *entry, prompt []int, opt generate.Options, n int,
	so *streamOptions, chunk func(i int, delta string, first bool, finish *string) map[string]any) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		apiError(w, http.StatusInternalServerError, "server_error", "streaming unsupported")
		return
	}
	prompt, err := s.fit(prompt, opt)
	if err != nil {
		s.fail(w, err)
		return
	}
	type ev struct {
		i      int
		delta  string
		finish *string
	}
	events := make(chan ev, 4096)
	sent := make([]string, n)
	onToken := func(i int, c *generate.Completion) {
		text := c.Text
		if text == "" {
			text = s.m.Tokenizer.Decode(c.IDs, true)
		}
		safe := len(text) - holdBack(text, opt.Stop)
		for safe > len(sent[i]) && !utf8.ValidString(text[:safe]) {
			safe--
		}
		if safe > len(sent[i]) && strings.HasPrefix(text, sent[i]) {
			// Never block the batch on a client that has gone: its row is cancelled instead.
			select {
			case events <- ev{i: i, delta: text[len(sent[i]):safe]}:
				sent[i] = text[:safe]
			case <-r.Context().Done():
			}
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	write := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		flusher.Flush()
	}
	done := make(chan struct{})
	var comps []generate.Completion
	go func() {
		comps, err = s.generateN(r.Context(), e, prompt, opt, n, onToken)
		close(done)
	}()
	usage := so != nil && so.IncludeUsage
	// With include_usage every chunk carries "usage": null, and a last chunk with no choices
	// carries the totals (OpenAI's stream_options).
	send := func(c map[string]any) {
		if usage {
			c["usage"] = nil
		}
		write(c)
	}
	for i := 0; i < n; i++ {
		send(chunk(i, "", true, nil))
	}
	for {
		select {
		case e := <-events:
			send(chunk(e.i, e.delta, false, e.finish))
			continue
		case <-done:
		}
		break
	}
	for len(events) > 0 {
		e := <-events
		send(chunk(e.i, e.delta, false, e.finish))
	}
	if err != nil {
		write(map[string]any{"error": map[string]any{"message": err.Error(), "type": "server_error"}})
		return
	}
	for i, c := range comps {
		rest := ""
		if strings.HasPrefix(c.Text, sent[i]) {
			rest = c.Text[len(sent[i]):]
		}
		f := c.FinishReason
		send(chunk(i, rest, false, &f))
	}
	out := 0
	for _, c := range comps {
		out += len(c.IDs)
	}
	if usage {
		last := chunk(0, "", false, nil)
		last["choices"], last["usage"] = []any{}, usageOf(len(prompt), out)
		write(last)
	}
	countTokens(r, len(prompt), out)
	fmt.Fprint(w, "data: [DONE]\n\n")
	flusher.Flush()
}

// holdBack is the length of the longest suffix of text that is a proper prefix of a stop string.
func holdBack(text string, stops []string) int {
	best := 0
	for _, s := range stops {
		for k := min(len(s)-1, len(text)); k > best; k-- {
			if strings.HasSuffix(text, s[:k]) {
				best = k
				break
			}
		}
	}
	return best
}

type completionRequest struct {
	Model    string          `json:"model"`
	Prompt   json.RawMessage `json:"prompt"`
	Echo     bool            `json:"echo"`
	Logprobs *int            `json:"logprobs"`
	sampling
}

// promptIDs accepts a string or a list of token ids (one prompt).
func (s *Server) promptIDs(raw json.RawMessage) ([]int, error) {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return s.m.Tokenizer.Encode(text, true), nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil && len(ids) > 0 {
		for _, id := range ids {
			if id < 0 || id >= s.m.Config.VocabSize {
				return nil, fmt.Errorf("token id %d out of range", id)
			}
		}
		return ids, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil && len(list) == 1 {
		return s.m.Tokenizer.Encode(list[0], true), nil
	}
	return nil, fmt.Errorf("prompt must be a string, a list of one string, or a list of token ids")
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !decode(w, r, &req) {
		return
	}
	e := s.lookup(w, req.Model)
	if e == nil {
		return
	}
	defer s.release(e)
	prompt, err := s.promptIDs(req.Prompt)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	opt, n, msg := s.options(req.sampling, 16)
	if msg != "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > maxTopLogprobs {
			apiErrorCode(w, http.StatusBadRequest, "invalid_request_error", "", "logprobs", fmt.Sprintf("logprobs must be between 0 and %d", maxTopLogprobs))
			return
		}
		opt.Logprobs, opt.TopLogprobs = true, *req.Logprobs
	}
	id, created := s.id("cmpl"), time.Now().Unix()
	if req.Stream {
		if req.Echo || req.Logprobs != nil {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "echo and logprobs are not supported with stream")
			return
		}
		s.stream(w, r, e, prompt, opt, n, req.StreamOptions, func(i int, delta string, _ bool, finish *string) map[string]any {
			return map[string]any{"id": id, "object": "text_completion", "created": created, "model": e.name,
				"choices": []any{map[string]any{"index": i, "text": delta, "finish_reason": finish, "logprobs": nil}}}
		})
		return
	}
	comps := make([]generate.Completion, n)
	if opt.MaxNewTokens > 0 {
		if comps, err = s.generateN(r.Context(), e, prompt, opt, n, nil); err != nil {
			s.fail(w, err)
			return
		}
	} else {
		for i := range comps {
			comps[i].FinishReason = "length"
		}
	}
	// With echo, the prompt's tokens come first: the first has no context (null), each other
	// its log-probability and, with logprobs > 0, the alternatives at its position.
	var promptLP []float64
	var promptTop [][]generate.Alt
	if req.Echo && req.Logprobs != nil && len(prompt) > 1 {
		logits, err := e.m.Logits(r.Context(), [][]int{prompt})
		if err != nil {
			s.fail(w, err)
			return
		}
		for t := 0; t+1 < len(prompt); t++ {
			promptLP = append(promptLP, cpu.LogSoftmaxAt(logits[0][t], prompt[t+1]))
			if opt.TopLogprobs > 0 {
				promptTop = append(promptTop, generate.TopK(logits[0][t], opt.TopLogprobs))
			}
		}
	}
	var choices []any
	out := 0
	for i, c := range comps {
		out += len(c.IDs)
		text := c.Text
		choice := map[string]any{"index": i, "finish_reason": c.FinishReason, "logprobs": nil}
		if req.Logprobs != nil {
			var ids []int
			lps := []any{}
			tops := []any{}
			// The alternatives at position k of all, or null without logprobs > 0.
			addTop := func(all [][]generate.Alt, k int) {
				if opt.TopLogprobs == 0 || k >= len(all) {
					tops = append(tops, nil)
					return
				}
				m := map[string]float64{}
				for _, a := range all[k] {
					m[s.tokenText(a.ID)] = a.Logprob
				}
				tops = append(tops, m)
			}
			if req.Echo {
				ids = append(ids, prompt...)
				lps, tops = append(lps, nil), append(tops, nil) // the first token has no context
				for k, v := range promptLP {
					lps = append(lps, v)
					addTop(promptTop, k)
				}
			}
			ids = append(ids, c.IDs...)
			for k := range c.IDs { // a stop string may have cut ids whose log-probs were kept
				lps = append(lps, c.Logprobs[k])
				addTop(c.Top, k)
			}
			tokens := make([]string, len(ids))
			offsets := make([]int, len(ids))
			at := 0 // in characters of prompt + completion, as OpenAI counts
			if !req.Echo {
				at = utf8.RuneCountInString(s.m.Tokenizer.Decode(prompt, true))
			}
			for k, id := range ids {
				tokens[k], offsets[k] = s.tokenText(id), at
				at += utf8.RuneCountInString(tokens[k])
			}
			choice["logprobs"] = map[string]any{"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
		}
		if req.Echo {
			text = s.m.Tokenizer.Decode(prompt, true) + text
		}
		choice["text"] = text
		choices = append(choices, choice)
	}
	countTokens(r, len(prompt), out)
	writeJSON(w, map[string]any{"id": id, "object": "text_completion", "created": created, "model": e.name,
		"choices": choices, "usage": usageOf(len(prompt), out)})
}
