package model

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/hf"
)

// LoRAScope holds adapter variables, named <module>.lora_A.weight / .lora_B.weight.
const LoRAScope = "/lora"

// DropoutRNGParam is the graph parameter through which a training graph hands the LoRA
// dropout its random state; without it, dropout is off (inference).
const DropoutRNGParam = "lora_dropout_rng"

// LoRA is a low-rank adapter configuration (PEFT's LoraConfig).
type LoRA struct {
	R       int      `json:"r"`
	Alpha   float64  `json:"lora_alpha"`
	Dropout float64  `json:"lora_dropout"`
	Targets []string `json:"target_modules"` // q, k, v, o, gate, up, down or the *_proj names
}

// AddLoRA attaches adapters to the chosen linear layers of every block (A random as PEFT's
// kaiming-uniform, B zero, so the model's outputs are unchanged) and freezes the base weights.
func (m *Model) AddLoRA(cfg LoRA, seed uint64) error {
	if m.lora != nil {
		return fmt.Errorf("model already has LoRA adapters")
	}
	if cfg.R < 1 {
		return fmt.Errorf("LoRA rank must be at least 1, got %d", cfg.R)
	}
	if cfg.Dropout < 0 || cfg.Dropout >= 1 {
		return fmt.Errorf("LoRA dropout must be in [0, 1), got %g", cfg.Dropout)
	}
	if scale := cfg.Alpha / float64(cfg.R); math.IsNaN(scale) || math.IsInf(scale, 0) || math.Abs(scale) > MaxLoRAScale {
		return fmt.Errorf("LoRA scale alpha/r = %g/%d is not a number within ±%g", cfg.Alpha, cfg.R, MaxLoRAScale)
	}
	if m.desc.loraTargets == nil {
		return fmt.Errorf("LoRA targets are defined for the llama, mistral, qwen2 and qwen3 families; %s has none", m.Config.ModelType)
	}
	var suffixes []string
	for _, t := range cfg.Targets {
		s, ok := m.desc.loraTargets[t]
		if !ok {
			for _, v := range m.desc.loraTargets {
				if strings.HasSuffix(v, "."+t) {
					s, ok = v, true
				}
			}
		}
		if !ok {
			return fmt.Errorf("LoRA target %q: %s has no such module (have q, k, v, o, gate, up, down)", t, m.Config.ModelType)
		}
		suffixes = append(suffixes, s)
	}
	if len(suffixes) == 0 {
		return fmt.Errorf("no LoRA targets")
	}
	// The rank sizes every allocation below: a rank beyond a target's smaller side adds nothing
	// a full update could not, and an absurd one (r: 100000000) would exhaust memory.
	for _, n := range m.names {
		mod, ok := strings.CutSuffix(n, ".weight")
		if !ok || !slices.ContainsFunc(suffixes, func(s string) bool { return strings.HasSuffix(mod, "."+s) }) {
			continue
		}
		dims := m.Variable(n).Shape().Dimensions
		if side := min(dims[0], dims[1]); cfg.R > side {
			return fmt.Errorf("LoRA rank %d is larger than %s's smaller side (%d)", cfg.R, mod, side)
		}
	}
	for _, n := range m.names {
		m.Variable(n).Trainable = false
	}
	lctx := m.Ctx.InAbsPath(LoRAScope)
	l := &loraState{cfg: cfg, scale: cfg.Alpha / float64(cfg.R), modules: map[string]bool{}}
	for _, n := range m.names {
		mod, ok := strings.CutSuffix(n, ".weight")
		if !ok || !slices.ContainsFunc(suffixes, func(s string) bool { return strings.HasSuffix(mod, "."+s) }) {
			continue
		}
		dims := m.Variable(n).Shape().Dimensions // [out, in]
		out, in := dims[0], dims[1]
		rng := rand.New(rand.NewPCG(seed, hashName(mod)))
		a := make([]float32, cfg.R*in)
		bound := 1 / math.Sqrt(float64(in))
		for i := range a {
			a[i] = float32((2*rng.Float64() - 1) * bound)
		}
		lctx.VariableWithValue(mod+".lora_A.weight", tensors.FromFlatDataAndDimensions(a, cfg.R, in))
		lctx.VariableWithValue(mod+".lora_B.weight", tensors.FromShape(shapes.Make(dtypes.Float32, out, cfg.R)))
		l.modules[mod] = true
	}
	m.lora = l
	m.execs = map[string]*context.Exec{} // graphs built before now lack the adapters
	// On a compiling backend (a GPU) the frozen base stays in the half dtype it was saved in, at
	// half the memory (see linear). The CPU path packs float32 weights itself.
	if m.coarse {
		return m.setBaseDType(true)
	}
	return nil
}

// LoRADropout is the adapters' dropout rate (0 without adapters).
func (m *Model) LoRADropout() float64 {
	if m.lora == nil {
		return 0
	}
	return m.lora.cfg.Dropout
}

// HasLoRA reports whether adapters are attached.
func (m *Model) HasLoRA() bool { return m.lora != nil }

type loraState struct {
	cfg     LoRA
	scale   float64
	modules map[string]bool
}

// loraDelta is scale·B·A·dropout(x) for a module with adapters, or nil.
func (w *weights) loraDelta(x *Node, module string) *Node {
	l := w.m.lora
	if l == nil || !l.modules[module] {
		return nil
	}
	get := func(n string) *Node {
		return w.ctx.GetVariableByScopeAndName(LoRAScope, module+n).ValueGraph(w.g)
	}
	if w.rng != nil && l.cfg.Dropout > 0 {
		var u *Node
		w.rng, u = RandomUniform(w.rng, x.Shape())
		keep := GreaterOrEqual(u, Scalar(w.g, u.DType(), l.cfg.Dropout))
		x = Where(keep, MulScalar(x, 1/(1-l.cfg.Dropout)), ZerosLike(x))
	}
	h := Einsum("bti,ri->btr", x, get(".lora_A.weight"))
	return MulScalar(Einsum("btr,or->bto", h, get(".lora_B.weight")), l.scale)
}

// peftName is the tensor name PEFT uses for an adapter of a causal LM.
func peftName(module, ab string) string {
	return "base_model.model." + module + ".lora_" + ab + ".weight"
}

// SaveAdapter writes the adapters in PEFT's layout: adapter_config.json and
// adapter_model.safetensors.
func (m *Model) SaveAdapter(dir string) error {
	if m.lora == nil {
		return fmt.Errorf("model has no LoRA adapters")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts := map[string]*hf.Tensor{}
	var mods []string
	for mod := range m.lora.modules {
		mods = append(mods, mod)
		for _, ab := range []string{"A", "B"} {
			v := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_"+ab+".weight")
			val := v.MustValue()
			ts[peftName(mod, ab)] = &hf.Tensor{Shape: val.Shape().Dimensions, Stored: hf.F32, Data: tensors.MustCopyFlatData[float32](val)}
		}
	}
	if err := hf.WriteSafetensors(filepath.Join(dir, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	sort.Strings(mods)
	targets := map[string]bool{}
	for _, mod := range mods {
		targets[mod[strings.LastIndex(mod, ".")+1:]] = true
	}
	cfg := map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": m.lora.cfg.R, "lora_alpha": m.lora.cfg.Alpha,
		"lora_dropout": m.lora.cfg.Dropout, "target_modules": sortedKeys(targets), "bias": "none",
		"fan_in_fan_out": false, "inference_mode": true, "base_model_name_or_path": m.Dir,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return files.WriteAtomic(filepath.Join(dir, "adapter_config.json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// MergeLoRA folds the adapters into the base weights (W += scale·B·A) and removes them, so
// Save writes a plain HF checkpoint.
func (m *Model) MergeLoRA() error {
	if m.lora == nil {
		return fmt.Errorf("model has no LoRA adapters")
	}
	// The engine's packings of the base and adapters go stale now: a fresh engine lets them go
	// before the base is widened (for a 0.5B model they are 2 GB).
	if err := m.SetEngine(m.Engine()); err != nil {
		return err
	}
	for mod := range m.lora.modules {
		a := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_A.weight").MustValue()
		b := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_B.weight").MustValue()
		w := m.Variable(mod + ".weight")
		wd, err := floatData(w.MustValue())
		if err != nil {
			return err
		}
		ad, bd := tensors.MustCopyFlatData[float32](a), tensors.MustCopyFlatData[float32](b)
		r, in := a.Shape().Dimensions[0], a.Shape().Dimensions[1]
		out := b.Shape().Dimensions[0]
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				s := 0.0
				for k := 0; k < r; k++ {
					s += float64(bd[o*r+k]) * float64(ad[k*in+i])
				}
				wd[o*in+i] += float32(m.lora.scale * s)
			}
		}
		w.MustSetValue(tensors.FromFlatDataAndDimensions(wd, out, in))
	}
	if err := m.Ctx.InAbsPath(LoRAScope).DeleteVariablesInScope(); err != nil {
		return err
	}
	if err := m.setBaseDType(false); err != nil { // trainable again: float32 masters
		return err
	}
	for _, n := range m.names {
		m.Variable(n).Trainable = true
	}
	m.lora = nil
	m.execs = map[string]*context.Exec{}
	return nil
}

// MaxLoRAScale bounds lora_alpha/r: adapters are trained at scales of about 0.5 to 4, and a scale
// past float32's range turns every logit into infinities (or NaN) that the API answers as junk.
const MaxLoRAScale = 1e4

// ParseAdapterConfig reads a PEFT adapter_config.json and checks the fields that do not depend
// on the model: a rank from 1 to maxRank (0: no bound), a finite lora_alpha with
// lora_alpha/r within MaxLoRAScale, a dropout in [0, 1) and some targets.
func ParseAdapterConfig(b []byte, maxRank int) (LoRA, error) {
	var raw struct {
		R       *int            `json:"r"`
		Alpha   *float64        `json:"lora_alpha"`
		Dropout float64         `json:"lora_dropout"`
		Targets json.RawMessage `json:"target_modules"`
		RSLoRA  bool            `json:"use_rslora"`
		DoRA    bool            `json:"use_dora"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return LoRA{}, err
	}
	var cfg LoRA
	switch {
	case raw.R == nil:
		return cfg, fmt.Errorf(`"r": missing`)
	case *raw.R < 1:
		return cfg, fmt.Errorf(`"r": the rank must be at least 1, got %d`, *raw.R)
	case maxRank > 0 && *raw.R > maxRank:
		return cfg, fmt.Errorf(`"r": LoRA rank %d is greater than max_lora_rank %d (--max-lora-rank)`, *raw.R, maxRank)
	case raw.Alpha == nil:
		return cfg, fmt.Errorf(`"lora_alpha": missing`)
	case math.IsNaN(*raw.Alpha) || math.IsInf(*raw.Alpha, 0) || *raw.Alpha < 0 || *raw.Alpha/float64(*raw.R) > MaxLoRAScale:
		return cfg, fmt.Errorf(`"lora_alpha": %g gives a scale lora_alpha/r of %g; it must be a number from 0 to %g·r`, *raw.Alpha, *raw.Alpha/float64(*raw.R), MaxLoRAScale)
	case raw.Dropout < 0 || raw.Dropout >= 1:
		return cfg, fmt.Errorf(`"lora_dropout": must be in [0, 1), got %g`, raw.Dropout)
	case raw.RSLoRA || raw.DoRA:
		return cfg, fmt.Errorf(`"use_rslora"/"use_dora": only plain LoRA adapters are supported`)
	}
	if err := json.Unmarshal(raw.Targets, &cfg.Targets); err != nil || len(cfg.Targets) == 0 {
		return cfg, fmt.Errorf(`"target_modules": want a non-empty list of module names`)
	}
	cfg.R, cfg.Alpha, cfg.Dropout = *raw.R, *raw.Alpha, raw.Dropout
	return cfg, nil
}

// ReadAdapterConfig reads and checks dir/adapter_config.json (see ParseAdapterConfig).
func ReadAdapterConfig(dir string, maxRank int) (LoRA, error) {
	path := filepath.Join(dir, "adapter_config.json")
	b, err := files.ReadFile(path)
	if err != nil {
		return LoRA{}, err
	}
	cfg, err := ParseAdapterConfig(b, maxRank)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// WithAdapter returns a model that shares this one's weights, tokenizer and, on the CPU engine,
// the packing of every matrix the adapter leaves unchanged, with the adapter at dir on top: the
// way a server keeps several adapters resident over one base, as vLLM does. The base must not
// have adapters of its own, and its weights must not change while the returned model lives.
func (m *Model) WithAdapter(dir string, maxRank int) (*Model, error) {
	if m.lora != nil {
		return nil, fmt.Errorf("%s: the base already has LoRA adapters", dir)
	}
	c := &Model{Dir: m.Dir, Config: m.Config, Tokenizer: m.Tokenizer, Chat: m.Chat, turnEnd: m.turnEnd, turnEndIDs: m.turnEndIDs, endIDs: m.endIDs, Backend: m.Backend, Ctx: context.New(), desc: m.desc,
		stored: m.stored, names: m.names, execs: map[string]*context.Exec{}, coarse: m.coarse, base: m}
	wctx := c.Ctx.InAbsPath(WeightScope)
	for _, n := range m.names {
		v, err := m.Variable(n).Value()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", n, err)
		}
		wctx.VariableWithValue(n, v)
	}
	if err := c.SetEngine(m.Engine()); err != nil {
		return nil, err
	}
	if err := c.LoadAdapter(dir, maxRank); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadAdapter attaches a PEFT LoRA adapter directory (adapter_config.json and
// adapter_model.safetensors) to the model. Every field and tensor shape is checked before the
// adapters are allocated; maxRank bounds the rank (0: only by the model's own dimensions).
func (m *Model) LoadAdapter(dir string, maxRank int) error {
	cfg, err := ReadAdapterConfig(dir, maxRank)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "adapter_model.safetensors")
	ts, err := hf.ReadSafetensors(path)
	if err != nil {
		return err
	}
	if err := m.AddLoRA(cfg, 0); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	for mod := range m.lora.modules {
		for _, ab := range []string{"A", "B"} {
			v := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_"+ab+".weight")
			t, ok := ts[peftName(mod, ab)]
			if !ok || !slices.Equal(t.Shape, v.Shape().Dimensions) {
				return fmt.Errorf("%s: tensor %q missing or of another shape", path, peftName(mod, ab))
			}
			v.MustSetValue(tensors.FromFlatDataAndDimensions(t.Data, t.Shape...))
		}
	}
	return nil
}
