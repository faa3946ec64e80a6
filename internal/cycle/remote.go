package cycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/openaiapi"
)

// ServedDir holds, inside a run directory, the weights pushed to the generation server.
const ServedDir = "served"

// remoteSampler samples candidates from an inference server and keeps it on the white-box's
// current weights: before sampling from weights that optimiser steps have changed, the LoRA
// adapter is written (PEFT) and hot-swapped (unload the previous, load the new, named by the
// optimiser step), or, in full fine-tuning, the HF directory is written and the server reloads
// it (/update_weights_from_disk). The first push (a fresh or a resumed run) doubles as the check
// that the server has the endpoint. A server restart is waited for and the weights re-pushed.
type remoteSampler struct {
	api     *generate.Remote
	base    string // the server's name of the base model
	out     string // the run directory
	serving string // the model name requests carry now (the adapter of the current weights)
	version int    // optimiser steps of the weights served
	wait    time.Duration
}

// adapterName is the served name of the weights after step optimiser steps.
func (s *remoteSampler) adapterName(step int) string {
	return fmt.Sprintf("%s-cyclealign-step-%d", s.base, step)
}

// push makes the server sample from the runner's current weights.
func (r *Runner) push(ctx context.Context) error {
	s := r.remote
	step := r.tr.Step
	if r.M.HasLoRA() {
		name := s.adapterName(step)
		dir, err := filepath.Abs(filepath.Join(s.out, ServedDir, name))
		if err != nil {
			return err
		}
		if err := r.M.SaveAdapter(dir); err != nil {
			return err
		}
		// The previous adapter may be gone already (a restarted server), and a resumed run may
		// have pushed this name before: neither is an error.
		noLoRA := func(err error) error {
			if errors.Is(err, openaiapi.ErrNoEndpoint) {
				return fmt.Errorf("--generate-url %s cannot follow the LoRA weights: it has no /v1/load_lora_adapter and /v1/unload_lora_adapter "+
					"(vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve ... --enable-lora --max-lora-rank %d; SGLang: --enable-lora): %w",
					s.api.URL(), r.Cfg.LoRAR, err)
			}
			return err
		}
		if s.serving != "" && s.serving != s.base && s.serving != name {
			if err := s.api.UnloadAdapter(ctx, s.serving); err != nil && !isNotFound(err) {
				return noLoRA(err)
			}
			os.RemoveAll(filepath.Join(s.out, ServedDir, s.serving))
		}
		if err := s.api.UnloadAdapter(ctx, name); err != nil && !isNotFound(err) {
			return noLoRA(err)
		}
		if err := s.api.LoadAdapter(ctx, name, dir); err != nil {
			return noLoRA(err)
		}
		s.serving, s.version = name, step
		slog.Info("generation server follows the weights", "adapter", name)
		return nil
	}
	dir, err := filepath.Abs(filepath.Join(s.out, ServedDir, fmt.Sprintf("step-%d", step)))
	if err != nil {
		return err
	}
	if err := r.M.Save(dir); err != nil {
		return err
	}
	if err := s.api.UpdateWeights(ctx, dir); err != nil {
		if errors.Is(err, openaiapi.ErrNoEndpoint) {
			return fmt.Errorf("--generate-url %s cannot follow full fine-tuning: it has no /update_weights_from_disk (SGLang has it); "+
				"train a LoRA adapter instead (--lora-r) with a server that has /v1/load_lora_adapter: %w", s.api.URL(), err)
		}
		return err
	}
	if s.version != step {
		os.RemoveAll(filepath.Join(s.out, ServedDir, fmt.Sprintf("step-%d", s.version)))
	}
	s.serving, s.version = s.base, step
	return nil
}

// isNotFound tells a refused unload of an adapter the server does not have from a server
// without the endpoint.
func isNotFound(err error) bool {
	return openaiapi.StatusOf(err) == 404 && !errors.Is(err, openaiapi.ErrNoEndpoint)
}

// sample asks the server for candidates (and the tokens it generated); when it fails (a
// restart), it waits for the server to answer again, re-pushes the weights, and asks once more.
func (r *Runner) sample(ctx context.Context, prompts [][]int, opt generate.Options) ([][]generate.Completion, int, error) {
	s := r.remote
	if s.serving == "" || s.version != r.tr.Step { // weights changed since the last push (or a resumed run)
		if err := r.push(ctx); err != nil {
			return nil, 0, err
		}
	}
	// The prompts as the in-process path feeds them: fitted (oldest tokens first) to leave room
	// for the reply.
	room := r.M.Config.MaxPositions - opt.MaxNewTokens
	if room < 2 {
		return nil, 0, fmt.Errorf("max-new-tokens %d leaves no room for a prompt in %d positions", opt.MaxNewTokens, r.M.Config.MaxPositions)
	}
	ids := make([][]int, len(prompts))
	for i, p := range prompts {
		ids[i], _ = model.FitContext(p, nil, room)
	}
	texts, tokens, err := s.api.Text(ctx, s.serving, ids, opt)
	if err == nil || ctx.Err() != nil || !openaiapi.Transient(err) {
		return texts, tokens, err
	}
	slog.Warn("generation server failed; waiting for it", "url", s.api.URL(), "error", err)
	deadline := time.Now().Add(s.wait)
	for {
		if rerr := s.api.Ready(ctx); rerr == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("generation server %s did not come back within %s: %w", s.api.URL(), s.wait, err)
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := r.push(ctx); err != nil {
		return nil, 0, err
	}
	return s.api.Text(ctx, s.serving, ids, opt)
}
