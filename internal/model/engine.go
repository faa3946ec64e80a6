package model

import (
	"context"
	"fmt"
	"os"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
)

// engine computes a model: its log-probabilities, logits, KV-cache decoding, and the training
// forward and backward passes. One is chosen when the model is loaded: the own CPU kernels
// (cpu.go, cpu_train.go) on the pure-Go backend, the GoMLX graphs (graph.go) on XLA or when
// asked. Both read the weights from the model's variables and the architecture from its
// description (arch.go); callers never ask which engine runs.
type engine interface {
	name() string
	logProbs(ctx context.Context, seqs [][]int) ([][]float32, error)
	logits(ctx context.Context, seqs [][]int) ([][][]float32, error)
	// decoder starts decoding after each prompt with a budget of new tokens per row; without
	// useCache every step recomputes the whole prefix (the KV cache's baseline).
	decoder(prompts [][]int, budgets []int, useCache bool) (Decoder, error)
	// trainForward runs whole sequences and returns, per sequence, log p(s[t+1] | s[:t+1]) for
	// t < len(s)-1 (for a score head: its first output at every position), and the pass that
	// turns the gradient of those outputs into the gradients of the trainable tensors.
	trainForward(seqs [][]int, drop Dropout) (TrainPass, [][]float32, error)
}

// TrainPass is a training forward pass, kept for its backward pass.
type TrainPass interface {
	// Backward accumulates into g the gradient of L given dL/d(out[s][t]) for the outputs the
	// forward pass returned (d[s] may be nil: no gradient from that sequence).
	Backward(d [][]float32, g *Grads) error
}

// Grads holds gradient buffers keyed by variable: checkpoint tensor names for the base
// weights (scope WeightScope) and adapter names for LoRA (scope LoRAScope).
type Grads struct {
	Base map[string][]float32
	LoRA map[string][]float32
}

// Of is the buffer of a trainable variable.
func (g *Grads) Of(v *mlctx.Variable) []float32 {
	if v.Scope() == LoRAScope {
		return g.LoRA[v.Name()]
	}
	return g.Base[v.Name()]
}

// NewGrads allocates zeroed gradients for what trains: the adapters when the model has them,
// else every base tensor.
func (m *Model) NewGrads() *Grads {
	g := &Grads{Base: map[string][]float32{}, LoRA: map[string][]float32{}}
	for _, v := range m.Trainable() {
		buf := make([]float32, v.Shape().Size())
		if v.Scope() == LoRAScope {
			g.LoRA[v.Name()] = buf
		} else {
			g.Base[v.Name()] = buf
		}
	}
	return g
}

// Trainable lists the variables training updates: the adapters when the model has them, else
// every checkpoint tensor, in the context's order. Training updates float32 masters, so a base
// kept in bf16 is widened first (exactly).
func (m *Model) Trainable() []*mlctx.Variable {
	if m.lora == nil {
		if err := m.setBaseDType(false); err != nil {
			panic(fmt.Errorf("widening the weights for training: %w", err))
		}
	}
	var out []*mlctx.Variable
	for v := range m.Ctx.IterVariables() {
		if v.Trainable && (v.Scope() == WeightScope || v.Scope() == LoRAScope) {
			out = append(out, v)
		}
	}
	return out
}

// Dropout configures LoRA dropout for one pass: masks come from Seed alone, so a pass can be
// repeated exactly (a resumed run draws the same masks).
type Dropout struct {
	Rate float64
	Seed uint64
}

// Update changes trainable variables where they are stored (an optimiser step): fn gets each
// one's float32 values and may change them. It is the only way to write weights in place, so
// it is where the engines learn that their packings of those values are stale.
func (m *Model) Update(vars []*mlctx.Variable, fn func(i int, w []float32)) error {
	base, adapters := false, false
	for i, v := range vars {
		val, err := v.Value()
		if err != nil {
			return fmt.Errorf("%s: %w", v.Name(), err)
		}
		if err := tensors.MutableFlatData(val, func(w []float32) { fn(i, w) }); err != nil {
			return fmt.Errorf("%s: %w", v.Name(), err)
		}
		if v.Scope() == LoRAScope {
			adapters = true
		} else {
			base = true
		}
	}
	if base {
		m.baseVersion.Add(1)
	}
	if adapters {
		m.loraVersion.Add(1)
	}
	return nil
}

// EngineEnv names the environment variable that picks the engine on CPU: "cpu" (the default
// with the pure-Go backend) or "gomlx".
const EngineEnv = "CYCLEALIGN_ENGINE"

// SetEngine picks the engine: "cpu" (own kernels; pure-Go backend only) or "gomlx" (graphs).
// Load picks one already ($CYCLEALIGN_ENGINE, else the backend's own); this is for tests and
// benchmarks that compare the two on one model, before it is used.
func (m *Model) SetEngine(name string) error {
	switch name {
	case "gomlx":
		m.eng = &graphEngine{m: m}
	case "cpu":
		if !PureGo(m.Backend) {
			return fmt.Errorf("engine cpu needs the pure-Go backend, not %s", m.Backend.Name())
		}
		m.eng = &cpuEngine{m: m}
	default:
		return fmt.Errorf("%s: unknown engine %q (cpu or gomlx)", EngineEnv, name)
	}
	return nil
}

// Engine names the model's engine: "cpu" or "gomlx".
func (m *Model) Engine() string { return m.eng.name() }

func (m *Model) defaultEngine() error {
	name := os.Getenv(EngineEnv)
	if name == "" {
		name = "gomlx"
		if PureGo(m.Backend) {
			name = "cpu"
		}
	}
	return m.SetEngine(name)
}

// PureGo reports whether b is simplego, the backend the cpu engine shares memory with.
func PureGo(b backends.Backend) bool { return b.String() == "go" }
