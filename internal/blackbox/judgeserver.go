package blackbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// JudgeHandler serves the chat-completions wire format with a local ranker behind it (a reward
// model, the lexicon judge): it reads the demonstrations and the candidates of a ranking request
// and answers with the ranker's ranking. It lets the offline demo exercise the LLM ranker's whole
// HTTP path without an API key.
func JudgeHandler(ranker Ranker, name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": []any{map[string]any{"id": name, "object": "model", "owned_by": "cyclealign"}}})
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model    string    `json:"model"`
			Messages []Message `json:"messages"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&req); err != nil || len(req.Messages) == 0 {
			writeAPIError(w, http.StatusBadRequest, "malformed chat request")
			return
		}
		last := req.Messages[len(req.Messages)-1].Content
		reply := "I can only rank candidate replies."
		if prompt, cands, ok := ParseBlock(last); ok {
			res, err := ranker.Rank(r.Context(), Request{Prompt: untrim(prompt), Candidates: untrimAll(cands), Demos: demosOf(req.Messages)})
			if err != nil {
				writeAPIError(w, http.StatusInternalServerError, err.Error())
				return
			}
			parts := make([]string, len(res.Ranking))
			for i, c := range res.Ranking {
				parts[i] = fmt.Sprintf("[%d]", c+1)
			}
			reply = strings.Join(parts, " > ")
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "judge-" + fmt.Sprint(time.Now().UnixNano()), "object": "chat.completion",
			"created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": reply}}},
			"usage":   map[string]any{"prompt_tokens": len(last) / 4, "completion_tokens": len(reply) / 4, "total_tokens": (len(last) + len(reply)) / 4}})
	})
	return mux
}

func writeAPIError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}})
}

// The ranking request shows trimmed texts; untrim restores a dialogue's leading break and
// untrimAll a reply's leading space, as the white-box wrote them.
func untrim(prompt string) string { return "\n\n" + prompt }

func untrimAll(cands []string) []string {
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = " " + c
	}
	return out
}

// demosOf reads the demonstrations of a ranking conversation: each user block followed by the
// assistant's ranking of its shown candidates.
func demosOf(msgs []Message) []Demo {
	var out []Demo
	for i := 0; i+1 < len(msgs)-1; i++ {
		if msgs[i].Role != "user" || msgs[i+1].Role != "assistant" {
			continue
		}
		prompt, cands, ok := ParseBlock(msgs[i].Content)
		if !ok {
			continue
		}
		rank, ok := ParseRanking(msgs[i+1].Content, len(cands))
		if !ok {
			continue
		}
		out = append(out, Demo{Prompt: untrim(prompt), Candidates: untrimAll(cands), Ranking: rank})
	}
	return out
}
