package main

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/serve"
)

type serveOptions struct {
	Model, Adapter, Addr, Name string
	TokenEnv, TokenFile        string
	Template                   string
	Opt                        serve.Options
	NoBatching                 bool
}

func newServeCmd(g *globalOptions) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--addr HOST:PORT]",
		Short: "Serve a model over the OpenAI API (chat, completions with logprobs, streaming)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "HF model directory")
	f.StringVar(&o.Adapter, "adapter", "", "PEFT LoRA adapter directory to apply")
	f.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "listen address (loopback by default)")
	f.StringVar(&o.Opt.ModelName, "name", "", "model id clients use (default: the directory name)")
	f.StringVar(&o.TokenEnv, "token-env", "", "require this environment variable's value as bearer token")
	f.StringVar(&o.TokenFile, "token-file", "", "require the content of this file as bearer token")
	f.StringVar(&o.Template, "chat-template", "", "Jinja chat template file, as vLLM's flag (default: the model's own template, else the HH format)")
	f.Int64Var(&o.Opt.MaxBodyBytes, "max-body-bytes", 1<<20, "request body limit")
	f.IntVar(&o.Opt.MaxTokens, "max-tokens", 1024, "max_tokens limit")
	f.IntVar(&o.Opt.MaxRows, "max-batch", 32, "rows decoded together")
	f.BoolVar(&o.NoBatching, "no-batching", false, "run requests one at a time")
	f.BoolVar(&o.Opt.TruncatePrompts, "truncate-prompts", false, "cut too-long prompts (oldest tokens first) instead of refusing them")
	f.IntVar(&o.Opt.MaxAdapters, "max-loras", 8, "LoRA adapters resident at once (POST /v1/load_lora_adapter, selected by \"model\")")
	f.IntVar(&o.Opt.MaxLoRARank, "max-lora-rank", 16, "the largest rank of an adapter loaded at run time (as vLLM's flag)")
	return required(cmd, "model")
}

func runServe(ctx context.Context, o *serveOptions) error {
	m, err := loadModel(o.Model)
	if err != nil {
		return err
	}
	if err := m.CheckLanguageModel(); err != nil {
		return err
	}
	if o.Adapter != "" {
		if err := m.LoadAdapter(o.Adapter, 0); err != nil {
			return err
		}
	}
	if o.Opt.ModelName == "" {
		o.Opt.ModelName = strings.TrimSuffix(o.Model, "/")
		o.Opt.ModelName = o.Opt.ModelName[strings.LastIndex(o.Opt.ModelName, "/")+1:]
	}
	if o.Opt.Token, err = serve.LoadToken(o.TokenEnv, o.TokenFile); err != nil {
		return err
	}
	if o.Template != "" {
		if o.Opt.Chat, err = chat.LoadFile(o.Template, o.Model); err != nil {
			return err
		}
	}
	switch t := cmp.Or(o.Opt.Chat, m.Chat); {
	case t != nil:
		slog.Info("chat requests are rendered with a chat template", "template", t.Source)
	default:
		slog.Info("the model has no chat template: chat requests are rendered in the HH format (\\n\\nHuman: ... \\n\\nAssistant:)")
	}
	// Each adapter loaded at run time shares the base's weights; one given by --adapter is part
	// of the base, so runtime loads then start from a fresh copy of it.
	base := m
	if o.Adapter != "" {
		if base, err = loadModel(o.Model); err != nil {
			return err
		}
	}
	// serve checks --max-lora-rank before it loads; the load bounds the rank by the model.
	o.Opt.LoadAdapter = func(path string) (*model.Model, error) { return base.WithAdapter(path, 0) }
	if o.NoBatching {
		o.Opt.MaxRows = 1
	}
	s := serve.New(m, o.Opt)
	defer s.Close()
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	srv := s.HTTPServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	slog.Info("serving", "addr", "http://"+ln.Addr().String()+"/v1", "model", o.Opt.ModelName, "auth", o.Opt.Token != "")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down; finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
