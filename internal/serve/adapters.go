package serve

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/cyclealign/cyclealign/internal/model"
)

// The runtime LoRA API of vLLM (VLLM_ALLOW_RUNTIME_LORA_UPDATING) and SGLang: POST
// /v1/load_lora_adapter {"lora_name", "lora_path"} and POST /v1/unload_lora_adapter
// {"lora_name"}; requests then select an adapter by its name in "model". Each resident adapter is
// the base's weights shared with the adapter on top (model.WithAdapter), decoded by its own batcher.

type adapterRequest struct {
	Name string `json:"lora_name"`
	Path string `json:"lora_path"`
}

// names lists the servable models, the base first. Callers hold s.mu.
func (s *Server) names() []string {
	out := []string{s.o.ModelName}
	var ads []string
	for n := range s.adapters {
		ads = append(ads, n)
	}
	slices.Sort(ads)
	return append(out, ads...)
}

func (s *Server) loadAdapter(w http.ResponseWriter, r *http.Request) {
	var req adapterRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" || req.Path == "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "both 'lora_name' and 'lora_path' must be provided")
		return
	}
	if s.o.LoadAdapter == nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "this server was started without a base model directory to load adapters onto")
		return
	}
	// The configuration is checked before anything is loaded or a place is taken.
	if _, err := model.ReadAdapterConfig(req.Path, s.o.MaxLoRARank); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("loading adapter '%s': %v", req.Name, err))
		return
	}
	// The check against --max-loras and the claim of a place are one step, so concurrent loads
	// can never together exceed it or build the same adapter twice.
	s.mu.Lock()
	_, dup := s.adapters[req.Name]
	dup = dup || s.loading[req.Name] || req.Name == s.o.ModelName
	full := len(s.adapters)+len(s.loading) >= s.o.MaxAdapters
	if !dup && !full {
		s.loading[req.Name] = true
	}
	s.mu.Unlock()
	switch {
	case dup:
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("The lora adapter '%s' has already been loaded.", req.Name))
		return
	case full:
		apiError(w, http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("%d adapters are loaded, the most this server keeps (--max-loras): unload one first", s.o.MaxAdapters))
		return
	}
	m, err := s.o.LoadAdapter(req.Path)
	s.mu.Lock()
	delete(s.loading, req.Name)
	if err == nil {
		s.adapters[req.Name] = &entry{name: req.Name, path: req.Path, m: m, b: newBatcher(m, s.o.MaxRows, s.o.Window, &s.decoded)}
	}
	s.mu.Unlock()
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("loading adapter '%s' from %s: %v", req.Name, req.Path, err))
		return
	}
	slog.Info("loaded LoRA adapter", "name", req.Name, "path", req.Path)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' added successfully.", req.Name)
}

func (s *Server) unloadAdapter(w http.ResponseWriter, r *http.Request) {
	var req adapterRequest
	if !decode(w, r, &req) {
		return
	}
	s.mu.Lock()
	e, ok := s.adapters[req.Name]
	if ok {
		delete(s.adapters, req.Name)
		// Requests already holding the entry finish on its batcher; the last one stops it.
		e.unloaded = true
		if e.refs == 0 {
			e.retire()
		}
	}
	s.mu.Unlock()
	if !ok {
		apiErrorCode(w, http.StatusNotFound, "invalid_request_error", "lora_not_found", "lora_name",
			fmt.Sprintf("The lora adapter '%s' cannot be found.", req.Name))
		return
	}
	slog.Info("unloaded LoRA adapter", "name", req.Name)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' removed successfully.", req.Name)
}
