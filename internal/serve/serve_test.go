package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/model"
)

func start(t *testing.T, o Options) (*httptest.Server, *model.Model, openai.Client) {
	t.Helper()
	b, err := model.NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel"))
	if err != nil {
		t.Fatal(err)
	}
	if o.ModelName == "" {
		o.ModelName = "m"
	}
	s := New(m, o)
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	c := openai.NewClient(option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("tok"), option.WithMaxRetries(0))
	return hs, m, c
}

// postJSON posts a raw JSON body with a bearer token and decodes the reply.
func postJSON(t *testing.T, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

func TestChatCompletionsAndModels(t *testing.T) {
	_, _, c := start(t, Options{ModelName: "tiny", Token: "tok"})
	ctx := context.Background()
	models, err := c.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "tiny" {
		t.Fatalf("models: %v %v", models, err)
	}
	resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the capital of France?")},
		N:        openai.Int(3), MaxTokens: openai.Int(12), Seed: openai.Int(4), Temperature: openai.Float(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 3 || resp.Usage.PromptTokens == 0 || resp.Usage.CompletionTokens == 0 || resp.Usage.CompletionTokens > 36 {
		t.Fatalf("chat: %d choices, usage %+v", len(resp.Choices), resp.Usage)
	}
	if resp.Choices[0].Message.Content == resp.Choices[1].Message.Content && resp.Choices[1].Message.Content == resp.Choices[2].Message.Content {
		t.Fatal("n=3 sampled three identical replies")
	}
	// Same seed, same replies.
	again, _ := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the capital of France?")},
		N:        openai.Int(3), MaxTokens: openai.Int(12), Seed: openai.Int(4), Temperature: openai.Float(1)})
	if again.Choices[2].Message.Content != resp.Choices[2].Message.Content {
		t.Fatal("seeded requests differ")
	}
}

// TestCompletionLogprobsEqualScore: echo + logprobs over a prompt+response given as token ids
// equals the engine's score of that response.
func TestCompletionLogprobsEqualScore(t *testing.T) {
	_, m, c := start(t, Options{Token: "tok"})
	prompt, response := "\n\nHuman: What is the capital of France?\n\nAssistant:", " Paris is the capital of France."
	sc, err := m.ScoreText(context.Background(), []string{prompt}, []string{response})
	if err != nil {
		t.Fatal(err)
	}
	ids := append(append([]int64{}, toInt64(sc[0].PromptIDs)...), toInt64(sc[0].ResponseIDs)...)
	resp, err := c.Completions.New(context.Background(), openai.CompletionNewParams{Model: "m",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids},
		MaxTokens: openai.Int(0), Echo: openai.Bool(true), Logprobs: openai.Int(1)})
	if err != nil {
		t.Fatal(err)
	}
	lps := resp.Choices[0].Logprobs.TokenLogprobs
	if len(lps) != len(ids) {
		t.Fatalf("%d logprobs for %d tokens", len(lps), len(ids))
	}
	p := len(sc[0].PromptIDs)
	for i, want := range sc[0].TokenLogProbs {
		if math.Abs(lps[p+i]-want) > 1e-5 {
			t.Fatalf("token %d: completions %v, score %v", i, lps[p+i], want)
		}
	}
	if !strings.HasSuffix(resp.Choices[0].Text, response) {
		t.Fatalf("echo text %q", resp.Choices[0].Text)
	}
}

func toInt64(xs []int) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}

func TestStreamingAndStops(t *testing.T) {
	_, _, c := start(t, Options{Token: "tok"})
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello there")},
		MaxTokens: openai.Int(20), Seed: openai.Int(9), Temperature: openai.Float(0)}
	whole, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	st := c.Chat.Completions.NewStreaming(ctx, params)
	var got strings.Builder
	chunks, finish := 0, ""
	for st.Next() {
		ch := st.Current()
		if len(ch.Choices) > 0 {
			got.WriteString(ch.Choices[0].Delta.Content)
			if ch.Choices[0].FinishReason != "" {
				finish = ch.Choices[0].FinishReason
			}
		}
		chunks++
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.TrimPrefix(got.String(), " ") != whole.Choices[0].Message.Content || chunks < 3 || finish == "" {
		t.Fatalf("stream gave %q in %d chunks (finish %q), non-stream %q", got.String(), chunks, finish, whole.Choices[0].Message.Content)
	}
	// A stop string taken from the greedy reply cuts it there.
	text := whole.Choices[0].Message.Content
	if len(text) < 6 {
		t.Skip("reply too short")
	}
	stop := text[3:6]
	params.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
	cut, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if cut.Choices[0].Message.Content != strings.TrimPrefix(text[:strings.Index(text, stop)], " ") || cut.Choices[0].FinishReason != "stop" {
		t.Fatalf("stop %q: %q (%s)", stop, cut.Choices[0].Message.Content, cut.Choices[0].FinishReason)
	}
}

func TestRefusals(t *testing.T) {
	hs, _, _ := start(t, Options{Token: "tok", MaxBodyBytes: 2000, MaxTokens: 50})
	noKey := openai.NewClient(option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	_, err := noKey.Models.List(context.Background())
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("wrong token: %v", err)
	}
	post := func(body string) (int, map[string]any) {
		return postJSON(t, hs.URL+"/v1/chat/completions", "tok", body)
	}
	for _, c := range []struct {
		body   string
		status int
	}{
		{`{"messages": [`, 400},
		{`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 3000) + `"}]}`, 413},
		{`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":51}`, 400},
		{`{"model":"m","messages":[]}`, 400},
		{`{"model":"m","messages":[{"role":"robot","content":"hi"}]}`, 400},
	} {
		status, v := post(c.body)
		e, _ := v["error"].(map[string]any)
		if status != c.status || e == nil || e["message"] == "" || e["type"] == nil {
			t.Errorf("%.40s: status %d body %v, want %d with an OpenAI error", c.body, status, v, c.status)
		}
	}
}

// TestConcurrentRequestsShareABatch: requests arriving together are decoded in one batch and
// each gets the reply it would get alone.
func TestConcurrentRequestsShareABatch(t *testing.T) {
	_, _, c := start(t, Options{Token: "tok", Window: 200 * 1e6})
	ctx := context.Background()
	ask := func(q string) string {
		r, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "m", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(q)},
			MaxTokens: openai.Int(8), Temperature: openai.Float(0)})
		if err != nil {
			t.Error(err)
			return ""
		}
		return r.Choices[0].Text
	}
	qs := []string{"The quick brown fox", "Hello", "Licensor shall not be liable", "Paris is"}
	alone := make([]string, len(qs))
	for i, q := range qs {
		alone[i] = ask(q)
	}
	together := make([]string, len(qs))
	var wg sync.WaitGroup
	for i, q := range qs {
		wg.Add(1)
		go func(i int, q string) { defer wg.Done(); together[i] = ask(q) }(i, q)
	}
	wg.Wait()
	for i := range qs {
		if alone[i] != together[i] {
			t.Fatalf("%q: alone %q, batched %q", qs[i], alone[i], together[i])
		}
	}
}

func TestNoTokenAndGracefulShutdown(t *testing.T) {
	b, _ := model.NewBackend()
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Options{ModelName: "m", Token: "tok", Window: 300 * 1e6})
	defer s.Close()
	hs := httptest.NewUnstartedServer(s)
	hs.Start()
	resp, err := http.Get(hs.URL + "/v1/models")
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("no token: %v %v", resp.StatusCode, err)
	}
	// A request in flight when shutdown starts still gets its answer.
	c := openai.NewClient(option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("tok"), option.WithMaxRetries(0))
	got := make(chan error, 1)
	go func() {
		_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{Model: "m",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Hello")}, MaxTokens: openai.Int(8)})
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // the request now waits in the batcher's window
	if err := hs.Config.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("in-flight request failed during shutdown: %v", err)
	}
}

// TestAbandonedStreamStopsDecoding: a streaming client that goes away after the first chunk
// must not keep its 16 rows decoding to the end (nor block the batcher); the next request is
// served and the abandoned rows stopped long before their budget.
func TestAbandonedStreamStopsDecoding(t *testing.T) {
	hs, _, c := start(t, Options{Token: "tok"})
	s := hs.Config.Handler.(*Server)
	ctx, cancel := context.WithCancel(context.Background())
	body := `{"model":"m","prompt":"Hello","n":16,"max_tokens":240,"temperature":1,"seed":3,"stream":true}`
	req, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Leave once decoding is under way: after the first chunk that carries text.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, `"text":"`) && !strings.Contains(l, `"text":""`) {
			break
		}
	}
	cancel()
	resp.Body.Close()
	r, err := c.Completions.New(context.Background(), openai.CompletionNewParams{Model: "m",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Paris is")}, MaxTokens: openai.Int(4), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	abandoned := s.GeneratedTokens() - r.Usage.CompletionTokens
	if abandoned > 16*240/4 {
		t.Fatalf("the abandoned request decoded %d tokens after its client left (budget %d)", abandoned, 16*240)
	}
}

// TestBatchChecksEachRowAgainstItsOwnBudget: a long prompt with a small budget and a short
// prompt with a large one fit alone; batched together both must still succeed.
func TestBatchChecksEachRowAgainstItsOwnBudget(t *testing.T) {
	_, _, c := start(t, Options{Token: "tok", Window: 300 * time.Millisecond})
	long := make([]int64, 200)
	for i := range long {
		long[i] = int64(1 + i%400)
	}
	reqs := []openai.CompletionNewParams{
		{Model: "m", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: long}, MaxTokens: openai.Int(16), Temperature: openai.Float(0)},
		{Model: "m", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{5, 6, 7}}, MaxTokens: openai.Int(240), Temperature: openai.Float(0)},
	}
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = c.Completions.New(context.Background(), reqs[i])
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d failed in a shared batch: %v", i, err)
		}
	}
}

func TestLoadTokenRefusesEmptySources(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, []byte(" \n\t\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("s3cret\n"), 0o600)
	for _, f := range []string{blank, empty} {
		if tok, err := LoadToken("", f); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: got token %q, err %v; want a refusal naming the file", f, tok, err)
		}
	}
	t.Setenv("CA_TEST_TOKEN", "  ")
	if _, err := LoadToken("CA_TEST_TOKEN", ""); err == nil {
		t.Error("a blank --token-env variable was accepted")
	}
	if tok, err := LoadToken("", good); err != nil || tok != "s3cret" {
		t.Errorf("good file: %q %v", tok, err)
	}
}

func TestAuthNeedsBearerScheme(t *testing.T) {
	hs, _, _ := start(t, Options{Token: "tok"})
	for auth, want := range map[string]int{"tok": 401, "Basic tok": 401, "Bearer tok": 200, "Bearer tok2": 401, "": 401} {
		req, _ := http.NewRequest("GET", hs.URL+"/v1/models", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization %q: status %d, want %d", auth, resp.StatusCode, want)
		}
	}
}

// TestSlowClientsAreCut: a client that sends its headers or body a byte at a time is
// disconnected once the header or body deadline passes, instead of holding the connection.
func TestSlowClientsAreCut(t *testing.T) {
	b, _ := model.NewBackend()
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Options{HeaderTimeout: 200 * time.Millisecond, BodyTimeout: 200 * time.Millisecond})
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.HTTPServer()
	go srv.Serve(ln)
	defer srv.Close()
	for name, first := range map[string]string{
		"headers": "POST /v1/completions HTTP/1.1\r\nHost: x\r\n",
		"body":    "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
	} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(first))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		reply, err := io.ReadAll(conn) // ends when the server closes the connection
		conn.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: a trickling client still held the connection after 5 s", name)
		}
		if name == "body" && !strings.Contains(string(reply), "408") {
			t.Errorf("body: want a 408 reply, got %q", reply)
		}
	}
}

// TestChatContentSpecialTokens: "<|endoftext|>" typed in a message is encoded as text in the HH
// format; with a chat template the rendering is encoded as apply_chat_template and vLLM encode
// it, special tokens matched wherever they stand.
func TestChatContentSpecialTokens(t *testing.T) {
	hs, m, _ := start(t, Options{})
	s := hs.Config.Handler.(*Server)
	eot, _ := m.Tokenizer.ID("<|endoftext|>")
	var req chatRequest
	json.Unmarshal([]byte(`{"messages":[{"role":"system","content":"be nice <|endoftext|>"},{"role":"user","content":"hi <|endoftext|> there"}]}`), &req)
	count := func(ids []int) (n int) {
		for _, id := range ids {
			if id == eot {
				n++
			}
		}
		return n
	}
	ids, err := s.prompt(req)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(ids); n != 0 {
		t.Errorf("HH format: user-typed <|endoftext|> became %d control tokens", n)
	}
	s.o.Chat, err = chat.Parse("{% for m in messages %}<|endoftext|>{{ m.role }}: {{ m.content }}{% endfor %}", "t", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err = s.prompt(req); err != nil {
		t.Fatal(err)
	}
	if want := m.Tokenizer.Encode("<|endoftext|>system: be nice <|endoftext|><|endoftext|>user: hi <|endoftext|> there", false); !slices.Equal(ids, want) || count(ids) != 4 {
		t.Errorf("template: %v, want %v", ids, want)
	}
}

// TestOpenAIFaithfulLogprobs: completions' logprobs carry decoded tokens, top_logprobs with k
// entries and text offsets into prompt+completion; chat returns logprobs.content; an unknown
// model is a 404 model_not_found; a too-long prompt's 400 says how to fix it; every request
// leaves one access-log line without the token.
func TestOpenAIFaithfulLogprobs(t *testing.T) {
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)
	hs, _, _ := start(t, Options{Token: "s3cret-token"})
	post := func(path, body string) (int, map[string]any) { return postJSON(t, hs.URL+path, "s3cret-token", body) }
	code, v := post("/v1/completions", `{"model":"m","prompt":"Paris is the","max_tokens":4,"temperature":0,"logprobs":2}`)
	if code != 200 {
		t.Fatalf("completions: %d %v", code, v)
	}
	lp := v["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)
	tokens, offsets, tops := lp["tokens"].([]any), lp["text_offset"].([]any), lp["top_logprobs"].([]any)
	text := v["choices"].([]any)[0].(map[string]any)["text"].(string)
	joined := ""
	for _, tk := range tokens {
		joined += tk.(string)
	}
	if joined != text || strings.Contains(joined, "Ġ") {
		t.Fatalf("tokens %q do not spell the text %q", tokens, text)
	}
	if int(offsets[0].(float64)) != len("Paris is the") {
		t.Fatalf("first offset %v, want the prompt's length %d", offsets[0], len("Paris is the"))
	}
	if lps := lp["token_logprobs"].([]any); len(tokens) == 0 || len(lps) != len(tokens) || len(tops) != len(tokens) {
		t.Fatalf("%d tokens, %d log-probs, %d top_logprobs", len(tokens), len(lps), len(tops))
	}
	for k := 1; k < len(tokens); k++ {
		if int(offsets[k].(float64)) != int(offsets[k-1].(float64))+len([]rune(tokens[k-1].(string))) {
			t.Fatalf("text_offset %v does not follow the tokens %q", offsets, tokens)
		}
	}
	for k, tp := range tops {
		alts := tp.(map[string]any)
		if len(alts) != 2 {
			t.Fatalf("top_logprobs[%d] has %d entries, want 2", k, len(alts))
		}
		// Greedy decoding picked the likeliest token: its log-prob is the larger alternative.
		best := -1e9
		for _, x := range alts {
			best = max(best, x.(float64))
		}
		if got := lp["token_logprobs"].([]any)[k].(float64); math.Abs(got-best) > 1e-6 {
			t.Fatalf("step %d: greedy token log-prob %v, best alternative %v", k, got, best)
		}
	}
	// Echo: the prompt's first token has no context (null), the others have alternatives.
	_, v = post("/v1/completions", `{"model":"m","prompt":"Paris is the","max_tokens":0,"echo":true,"logprobs":1}`)
	lp = v["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)
	if lp["top_logprobs"].([]any)[0] != nil || lp["text_offset"].([]any)[0].(float64) != 0 || len(lp["top_logprobs"].([]any)[1].(map[string]any)) != 1 {
		t.Fatalf("echo logprobs: %v", lp)
	}
	code, v = post("/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":3,"temperature":0,"logprobs":true,"top_logprobs":3}`)
	content := v["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)["content"].([]any)
	if code != 200 || len(content) == 0 || len(content[0].(map[string]any)["top_logprobs"].([]any)) != 3 {
		t.Fatalf("chat logprobs: %d %v", code, v)
	}
	code, v = post("/v1/completions", `{"model":"gpt-5","prompt":"hi"}`)
	if e := v["error"].(map[string]any); code != 404 || e["code"] != "model_not_found" || e["param"] != "model" {
		t.Fatalf("unknown model: %d %v", code, v)
	}
	long := make([]string, 250)
	for i := range long {
		long[i] = fmt.Sprint(5 + i%300)
	}
	code, v = post("/v1/completions", `{"model":"m","prompt":[`+strings.Join(long, ",")+`],"max_tokens":20}`)
	if msg := v["error"].(map[string]any)["message"].(string); code != 400 || !strings.Contains(msg, "--truncate-prompts") || !strings.Contains(msg, "--blackbox-max-tokens") {
		t.Fatalf("too long a prompt: %d %v", code, v)
	}
	lines := strings.Count(logs.String(), "msg=request")
	if lines != 5 || !strings.Contains(logs.String(), "path=/v1/chat/completions status=200 prompt_tokens=") || strings.Contains(logs.String(), "s3cret-token") {
		t.Fatalf("access log (%d lines):\n%s", lines, logs.String())
	}
}

// Content sent as OpenAI's list of parts (what clients send for multimodal models) is read as
// its text parts joined with newlines, as vLLM reads it; an image part is refused by name.
func TestChatContentParts(t *testing.T) {
	_, _, c := start(t, Options{ModelName: "tiny", Token: "tok"})
	ctx := context.Background()
	ask := func(m openai.ChatCompletionMessageParamUnion) (string, error) {
		resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tiny",
			Messages: []openai.ChatCompletionMessageParamUnion{m}, MaxTokens: openai.Int(12), Seed: openai.Int(4), Temperature: openai.Float(1)})
		if err != nil {
			return "", err
		}
		return resp.Choices[0].Message.Content, nil
	}
	whole, err := ask(openai.UserMessage("What is the capital\nof France?"))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := ask(openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
		openai.TextContentPart("What is the capital"), openai.TextContentPart("of France?")}))
	if err != nil || parts != whole || whole == "" {
		t.Fatalf("text parts: %q (%v), the same text as a string: %q", parts, err, whole)
	}
	_, err = ask(openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("What is this?"),
		openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/a.png"})}))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.HasPrefix(apiErr.Message, `message content part 1 has type "image_url"`) {
		t.Fatalf("an image part: %v, want a 400 naming image_url", err)
	}
}

// A streamed request that cannot run is refused before the stream starts, with the same 400 as
// without streaming (it got a 200, an error event and no [DONE]).
func TestStreamRefusedBeforeItStarts(t *testing.T) {
	hs, m, _ := start(t, Options{MaxTokens: 4096})
	long := strings.Repeat("word ", m.Config.MaxPositions/2)
	for _, c := range []struct{ path, body string }{
		{"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":%q,"max_tokens":%d,"stream":true}`, long, m.Config.MaxPositions)},
		{"/v1/chat/completions", fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}],"max_tokens":%d,"stream":true}`, long, m.Config.MaxPositions)},
		{"/v1/completions", `{"model":"m","prompt":"","max_tokens":4,"stream":true}`},
	} {
		for _, stream := range []bool{false, true} {
			body := c.body
			if !stream {
				body = strings.Replace(body, `"stream":true`, `"stream":false`, 1)
			}
			code, v := postJSON(t, hs.URL+c.path, "tok", body)
			if code != http.StatusBadRequest || v["error"] == nil {
				t.Errorf("%s stream=%v: HTTP %d %v, want a 400 error", c.path, stream, code, v)
			}
		}
	}
}

// chatModelDir is the tiny GPT-2 with a ChatML chat template in its tokenizer_config.json.
func chatModelDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "..", "testdata", "tiny-gpt2-bytelevel")
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	cfg := `{"eos_token": "<|endoftext|>", "chat_template": "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|endoftext|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}`
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644)
	return dir
}

// A chat request is rendered with the model's own template by default, with vLLM's
// add_generation_prompt and continue_final_message, and usage.prompt_tokens counts the
// rendered prompt; streamed chat opens each choice with the role and, with include_usage,
// ends with a usage chunk (the official Node client's helper threw "missing role for choice 0").
func TestChatWithTheModelsTemplate(t *testing.T) {
	b, _ := model.NewBackend()
	m, err := model.Load(b, chatModelDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.Chat == nil || m.TurnEnd() != "<|endoftext|>\n" {
		t.Fatalf("template %v, turn end %q", m.Chat, m.TurnEnd())
	}
	s := New(m, Options{ModelName: "m"})
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	msgs := `[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello, I"}]`
	for _, c := range []struct {
		extra string
		text  string // the rendering whose tokens usage.prompt_tokens counts; "" for a 400
	}{
		{``, "<|im_start|>user\nHi<|endoftext|>\n<|im_start|>assistant\nHello, I<|endoftext|>\n<|im_start|>assistant\n"},
		{`,"add_generation_prompt":false`, "<|im_start|>user\nHi<|endoftext|>\n<|im_start|>assistant\nHello, I<|endoftext|>\n"},
		{`,"add_generation_prompt":false,"continue_final_message":true`, "<|im_start|>user\nHi<|endoftext|>\n<|im_start|>assistant\nHello, I"},
		{`,"continue_final_message":true`, ""},
	} {
		code, v := postJSON(t, hs.URL+"/v1/chat/completions", "", `{"model":"m","max_tokens":3,"temperature":0,"messages":`+msgs+c.extra+`}`)
		if c.text == "" {
			if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(v), "continue_final_message") {
				t.Errorf("%s: HTTP %d %v, want a 400", c.extra, code, v)
			}
			continue
		}
		want := len(m.Tokenizer.Encode(c.text, false))
		if code != 200 || v["usage"].(map[string]any)["prompt_tokens"] != float64(want) {
			t.Errorf("%s: HTTP %d, usage %v, want %d prompt tokens", c.extra, code, v["usage"], want)
		}
	}
	resp, err := http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"m","n":2,"max_tokens":4,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var chunks []map[string]any
	for _, line := range strings.Split(string(body), "\n") {
		if data, ok := strings.CutPrefix(line, "data: "); ok && data != "[DONE]" {
			var c map[string]any
			json.Unmarshal([]byte(data), &c)
			chunks = append(chunks, c)
		}
	}
	roles := map[float64]bool{}
	for _, c := range chunks[:len(chunks)-1] {
		ch := c["choices"].([]any)[0].(map[string]any)
		if ch["delta"].(map[string]any)["role"] == "assistant" {
			if roles[ch["index"].(float64)] {
				t.Errorf("choice %v names its role twice", ch["index"])
			}
			roles[ch["index"].(float64)] = true
		}
	}
	last := chunks[len(chunks)-1]
	u, _ := last["usage"].(map[string]any)
	if len(roles) != 2 || len(last["choices"].([]any)) != 0 || u == nil || u["prompt_tokens"] != float64(len(m.Tokenizer.Encode("<|im_start|>user\nHi<|endoftext|>\n<|im_start|>assistant\n", false))) ||
		!strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Fatalf("roles %v, last chunk %v", roles, last)
	}
}
