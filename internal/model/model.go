// Package model is the white-box model: it loads a HuggingFace causal-LM directory into GoMLX
// variables named after the checkpoint's tensors, describes each supported architecture once
// (arch.go), and computes it on one of two engines (engine.go): scoring, KV-cache decoding, and
// the training forward and backward passes. It saves back in HF's layout.
package model

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/hf"
	"github.com/cyclealign/cyclealign/internal/tokenizer"
)

// WeightScope is the context scope holding the checkpoint's tensors, one variable per tensor,
// named exactly as in model.safetensors.
const WeightScope = "/w"

// Model is a loaded white-box model. Graph executions are serialised by an internal lock.
type Model struct {
	// Dir is the absolute path the model was loaded from ("" when built in memory); a saved
	// adapter names it as its base model.
	Dir       string
	Config    *hf.Config
	Tokenizer *tokenizer.Tokenizer
	Backend   backends.Backend
	Ctx       *context.Context
	desc      *desc // the architecture, described for this config
	eng       engine
	stored    map[string]hf.DType
	names     []string

	// Recompute trades time for memory in training passes (transformers' gradient
	// checkpointing): the CPU engine keeps each layer's input only and runs the layer again in
	// the backward pass, with the same results. The GoMLX graphs always compute their backward
	// pass from the inputs.
	Recompute bool

	// Chat is the model's chat template (nil: none, prompts are HH-format text).
	Chat       *chat.Template
	turnEnd    string // what Chat writes after an assistant message
	turnEndIDs []int  // its special tokens
	endIDs     []int  // every token that ends a reply (loadChat)

	lora *loraState
	base *Model // the model whose weights this one shares (WithAdapter), or nil

	mu         sync.Mutex
	execs      map[string]*context.Exec
	graphOwner GraphOwner

	// coarse rounds graph shapes to powers of two (see shapeLen): set on backends that compile.
	coarse bool
	// Counters of in-place changes (Model.Update: a changed tensor keeps its identity), base
	// weights and adapters, by which the CPU engine knows its packings are stale.
	baseVersion, loraVersion atomic.Uint64
}

// Load reads config.json, tokenizer.json and the safetensors weights of dir. Every tensor the
// architecture needs must be present with the shape the config implies.
func Load(backend backends.Backend, dir string) (*Model, error) {
	cfg, err := hf.ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	ts, err := hf.ReadModelTensorsBF16(dir)
	if err != nil {
		return nil, err
	}
	source := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(source); err != nil {
		source = filepath.Join(dir, "model.safetensors.index.json")
	}
	m, err := New(backend, cfg, tok, ts, source)
	if err != nil {
		return nil, err
	}
	m.Dir, _ = filepath.Abs(dir)
	if err := m.loadChat(dir); err != nil {
		return nil, err
	}
	return m, nil
}

// New builds a Model from parsed parts; source names the files in error messages.
func New(backend backends.Backend, cfg *hf.Config, tok *tokenizer.Tokenizer, ts map[string]*hf.Tensor, source string) (*Model, error) {
	d, err := describe(cfg, func(n string) bool { _, ok := ts[n]; return ok })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	want := d.tensors()
	m := &Model{Config: cfg, Tokenizer: tok, Backend: backend, Ctx: context.New(), desc: d,
		stored: map[string]hf.DType{}, execs: map[string]*context.Exec{}, coarse: !PureGo(backend)}
	wctx := m.Ctx.InAbsPath(WeightScope)
	m.names = sortedKeys(want)
	for _, name := range m.names {
		shape := want[name]
		t, ok := ts[name]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q is missing from the weights", source, name)
		}
		if !slices.Equal(t.Shape, shape) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, config.json implies %v", source, name, t.Shape, shape)
		}
		m.stored[name] = t.Stored
		// A tensor saved in a half dtype stays in it until something trains it (Trainable):
		// inference and a frozen base take half the memory, and widening is exact.
		var val *tensors.Tensor
		switch _, half := halfDTypes[t.Stored]; {
		case t.BF16 != nil:
			val = tensors.FromFlatDataAndDimensions(unsafe.Slice((*bfloat16.BFloat16)(unsafe.SliceData(t.BF16)), len(t.BF16)), t.Shape...)
		case half:
			val = bf16Tensor(t.Data, t.Shape)
		default:
			val = tensors.FromFlatDataAndDimensions(t.Data, t.Shape...)
		}
		wctx.VariableWithValue(name, val)
	}
	if tok != nil && tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("%s: tokenizer has %d tokens but config.json vocab_size is %d", source, tok.VocabSize(), cfg.VocabSize)
	}
	if err := m.defaultEngine(); err != nil {
		return nil, err
	}
	return m, nil
}

func errUnsupported(modelType string) error {
	return fmt.Errorf("config.json field model_type: unsupported value %q", modelType)
}

// TensorNames lists the checkpoint tensors the model holds, sorted.
func (m *Model) TensorNames() []string { return append([]string(nil), m.names...) }

// NumParams counts the checkpoint's parameters.
func (m *Model) NumParams() int {
	n := 0
	for _, name := range m.names {
		n += m.Variable(name).Shape().Size()
	}
	return n
}

// Variable returns the variable holding a checkpoint tensor, or nil.
func (m *Model) Variable(name string) *context.Variable {
	return m.Ctx.GetVariableByScopeAndName(WeightScope, name)
}

// Tensors returns the current weights as float32 tensors, each tagged with the dtype it was
// loaded in, ready to be written.
func (m *Model) Tensors() (map[string]*hf.Tensor, error) {
	out := map[string]*hf.Tensor{}
	for _, n := range m.names {
		data, err := m.floats(n)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", n, err)
		}
		out[n] = &hf.Tensor{Shape: m.Variable(n).Shape().Dimensions, Stored: m.stored[n], Data: data}
	}
	return out, nil
}

// floats is checkpoint tensor n's values as float32 (a copy, widened from bf16 if kept so).
func (m *Model) floats(n string) ([]float32, error) {
	val, err := m.Variable(n).Value()
	if err != nil {
		return nil, err
	}
	return floatData(val)
}

// SaveDTypes are the dtypes SaveAs writes.
var SaveDTypes = []string{"float32", "bfloat16", "float16"}

// CheckSaveDType reports an error unless SaveAs writes dtype ("" too: as loaded), so callers
// can refuse a bad setting before training rather than at the save.
func CheckSaveDType(dtype string) error {
	if dtype != "" && !slices.Contains(SaveDTypes, dtype) {
		return fmt.Errorf("unsupported %q (%s)", dtype, strings.Join(SaveDTypes, ", "))
	}
	return nil
}

// Save writes the model as a HuggingFace directory: config.json, model.safetensors with the
// checkpoint's tensor names and dtypes, and tokenizer.json.
func (m *Model) Save(dir string) error { return m.SaveAs(dir, "") }

// SaveAs is Save with every tensor written in dtype, a config.json name (float32, bfloat16,
// float16) that config.json then gives; "" keeps each tensor's loaded dtype. Training updates
// float32 weights, and in a bf16 export a change under half a bf16 step rounds away.
func (m *Model) SaveAs(dir, dtype string) error {
	if err := CheckSaveDType(dtype); err != nil {
		return fmt.Errorf("save dtype: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Each tensor is widened only when the writer reaches it.
	ts := map[string]*hf.Tensor{}
	for _, n := range m.names {
		ts[n] = &hf.Tensor{Shape: m.Variable(n).Shape().Dimensions, Stored: m.stored[n], Source: func() ([]float32, error) { return m.floats(n) }}
	}
	cfg := m.Config
	if dtype != "" {
		for _, t := range ts {
			t.Stored = hf.DTypeOf(dtype)
		}
		c := *m.Config
		c.Raw = maps.Clone(c.Raw)
		c.DType, c.Raw["dtype"] = dtype, dtype
		if _, ok := c.Raw["torch_dtype"]; ok {
			c.Raw["torch_dtype"] = dtype
		}
		cfg = &c
	}
	if err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := hf.WriteConfig(dir, cfg); err != nil {
		return err
	}
	if m.Tokenizer != nil {
		if err := files.WriteAtomic(filepath.Join(dir, "tokenizer.json"), func(w io.Writer) error {
			_, err := w.Write(m.Tokenizer.Raw())
			return err
		}); err != nil {
			return err
		}
	}
	return m.copyChatFiles(dir)
}

// weights gives graph code access to checkpoint tensors by name, and applies LoRA adapters
// (with dropout when the graph carries a random state) to the linear layers that have them.
type weights struct {
	m   *Model
	ctx *context.Context
	g   *Graph
	rng *Node
}

func newWeights(m *Model, ctx *context.Context, g *Graph) *weights {
	w := &weights{m: m, ctx: ctx.InAbsPath(WeightScope), g: g}
	if v, ok := ctx.GetGraphParam(g, DropoutRNGParam); ok {
		w.rng, _ = v.(*Node)
	}
	return w
}

func (w *weights) get(name string) *Node {
	v := w.ctx.GetVariableByScopeAndName(WeightScope, name)
	if v == nil {
		panic(fmt.Errorf("model has no tensor %q", name))
	}
	n := v.ValueGraph(w.g)
	if n.DType() != dtypes.Float32 { // a frozen base kept in half precision (setBaseDType)
		n = ConvertDType(n, dtypes.Float32)
	}
	return n
}

func (w *weights) has(name string) bool {
	return w.ctx.GetVariableByScopeAndName(WeightScope, name) != nil
}

// linear applies a torch.nn.Linear stored as name.weight [out,in] (+ name.bias when present).
// On a compiling backend (a GPU) a weight kept in bf16 multiplies in bf16 with float32
// accumulation, the product rounded to bf16 and carried on in float32; elsewhere it is widened.
func (w *weights) linear(x *Node, name string) *Node {
	var y *Node
	if v := w.ctx.GetVariableByScopeAndName(WeightScope, name+".weight"); w.m.coarse && v != nil && v.DType() == dtypes.BFloat16 {
		y = ConvertDType(Einsum("bti,oi->bto", ConvertDType(x, v.DType()), v.ValueGraph(w.g)), dtypes.Float32)
	} else {
		y = Einsum("bti,oi->bto", x, w.get(name+".weight"))
	}
	if w.has(name + ".bias") {
		y = Add(y, ExpandLeftToRank(w.get(name+".bias"), y.Rank()))
	}
	if d := w.loraDelta(x, name); d != nil {
		y = Add(y, d)
	}
	return y
}

// floatData copies a float32 or bfloat16 tensor's values as float32.
func floatData(t *tensors.Tensor) ([]float32, error) {
	if t.DType() != dtypes.BFloat16 {
		return tensors.CopyFlatData[float32](t)
	}
	b, err := tensors.CopyFlatData[bfloat16.BFloat16](t)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(b))
	for i, x := range b {
		out[i] = x.Float32()
	}
	return out, nil
}

// bf16Tensor is a bfloat16 tensor of data (values a bf16 checkpoint held: exact).
func bf16Tensor(data []float32, dims []int) *tensors.Tensor {
	b := make([]bfloat16.BFloat16, len(data))
	for i, x := range data {
		b[i] = bfloat16.FromFloat32(x)
	}
	return tensors.FromFlatDataAndDimensions(b, dims...)
}

// halfDTypes are the checkpoint dtypes a frozen base can stay in on the device. f16 is not among
// them: simplego cannot hold f16 parameters, so that path could not be tested here.
var halfDTypes = map[hf.DType]dtypes.DType{hf.BF16: dtypes.BFloat16}

// setBaseDType stores every checkpoint tensor saved in a half dtype (halfDTypes) in it (half, for
// a frozen base: half the device memory) or in float32 (a trained base), keeping its values.
func (m *Model) setBaseDType(half bool) error {
	for _, n := range m.names {
		hd, ok := halfDTypes[m.stored[n]]
		if !ok {
			continue
		}
		dt := dtypes.Float32
		if half {
			dt = hd
		}
		v := m.Variable(n)
		if v.DType() == dt {
			continue
		}
		val, err := v.Value()
		if err != nil {
			return err
		}
		data, err := floatData(val)
		if err != nil {
			return err
		}
		dims := val.Shape().Dimensions
		t := tensors.FromFlatDataAndDimensions(data, dims...)
		if dt == dtypes.BFloat16 {
			t = bf16Tensor(data, dims)
		}
		if err := v.SetValue(t); err != nil {
			return fmt.Errorf("tensor %q: %w", n, err)
		}
	}
	m.execs = map[string]*context.Exec{}
	return nil
}
