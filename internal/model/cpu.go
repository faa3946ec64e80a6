package model

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/cpu"
)

// The own CPU engine for inference (scoring, logits, KV-cache decoding), computed by
// internal/cpu's kernels on packed weights instead of GoMLX's simplego interpreter. The
// weights are read from the model's variables and packed again whenever a value changes (a
// training step, a loaded adapter), so the packing always matches the variables. Training on
// this engine is cpu_train.go.

// cpuEngine is the engine of the own kernels.
type cpuEngine struct {
	m  *Model
	mu sync.Mutex
	lm *packedLM
	// train is the packed frozen base under LoRA training (cpu_train.go).
	train *trainCache
	// frozen holds bf16 packings of base matrices, made once and shared by inference and
	// training while the base weights are the tensors frozenKey (at version frozenVer).
	frozen    map[string]*cpu.Packed
	frozenKey []*tensors.Tensor
	frozenVer uint64
}

// bf16Pack returns the packing of projections' bf16 base weights, fused along their outputs,
// or nil unless every one is a bf16 linear weight. It is made once and shared by inference and
// training while the base weights do not change. Callers hold e.mu.
func (e *cpuEngine) bf16Pack(ps []proj) *cpu.Packed {
	m := e.m
	key := make([]*tensors.Tensor, 0, len(m.names))
	for _, n := range m.names {
		key = append(key, m.Variable(n).MustValue())
	}
	if !slices.Equal(key, e.frozenKey) || e.frozenVer != m.baseVersion.Load() {
		e.frozen, e.frozenKey, e.frozenVer = map[string]*cpu.Packed{}, key, m.baseVersion.Load()
	}
	var id string
	for _, p := range ps {
		if p.conv || m.Variable(p.weight).DType() != dtypes.BFloat16 {
			return nil
		}
		id += " " + p.weight
	}
	if p, ok := e.frozen[id]; ok {
		return p
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.weight
	}
	var p *cpu.Packed
	if err := m.withBF16(names, func(hs [][]uint16) { p = cpu.PackRowsBF16(hs, ps[0].in) }); err != nil {
		return nil
	}
	e.frozen[id] = p
	return p
}

// withBF16 calls fn with the bits of the named bfloat16 tensors, read in place: copying each
// before packing it made loading a 0.5B model 40% slower and its peak 0.25 GB higher.
func (m *Model) withBF16(names []string, fn func(hs [][]uint16)) error {
	return inPlace(m, names, func(val *tensors.Tensor, use func([]uint16)) error {
		return tensors.ConstFlatData(val, func(flat []bfloat16.BFloat16) {
			use(unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(flat))), len(flat)))
		})
	}, fn)
}

// inPlace calls fn with the named tensors' values as view gives each (read in place where it
// can, so valid only during fn): every view stays open, one inside the other, until fn returns.
func inPlace[T any](m *Model, names []string, view func(val *tensors.Tensor, use func([]T)) error, fn func([][]T)) error {
	var rec func(acc [][]T) error
	rec = func(acc [][]T) error {
		if len(acc) == len(names) {
			fn(acc)
			return nil
		}
		var inner error
		if err := view(m.Variable(names[len(acc)]).MustValue(), func(flat []T) { inner = rec(append(acc, flat)) }); err != nil {
			return fmt.Errorf("tensor %q: %w", names[len(acc)], err)
		}
		return inner
	}
	return rec(nil)
}

func (e *cpuEngine) name() string { return "cpu" }

// packedLM is a model's weights packed for the kernels.
type packedLM struct {
	d *desc
	// embed [V][D] (or embedH, in bfloat16 when it is kept so) is an embedding not tied to the
	// head; a tied one is read from the head's packing (tied), so that it is held once.
	embed  []float32
	embedH []uint16
	tied   bool
	wpe    []float32 // [positions][D] (learned positions)
	layers []packedLayer
	normW  []float32
	normB  []float32
	head   *cpu.Packed // [V or labels][D]
	src    []*tensors.Tensor
	ver    [2]uint64 // base and adapter versions packed
}

type packedLayer struct {
	ln1w, ln1b, ln2w, ln2b []float32
	qkv                    *cpu.Packed // q, k and v projections fused: [H·hd + 2·Hkv·hd][D]
	qkvb                   []float32
	qn, kn                 []float32 // per-head q and k norms (Qwen3)
	o                      *cpu.Packed
	ob                     []float32
	up                     *cpu.Packed // gate and up fused [2I][D] (SwiGLU), or [I][D]
	upb                    []float32
	down                   *cpu.Packed
	downb                  []float32
	scale                  float32 // attention scale
}

// values lists the current values of the weights and adapters, the identity of a packing.
func (m *Model) values() ([]*tensors.Tensor, error) {
	var out []*tensors.Tensor
	for _, n := range m.names {
		v, err := m.Variable(n).Value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if m.lora != nil {
		for _, mod := range sortedKeys(m.lora.modules) {
			for _, ab := range []string{".lora_A.weight", ".lora_B.weight"} {
				v, err := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+ab).Value()
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
		}
	}
	return out, nil
}

// packed returns the weights packed for the kernels, packing them again if any value was
// replaced (a new tensor) or changed in place (Model.Update).
func (e *cpuEngine) packed() (*packedLM, error) {
	m := e.m
	e.mu.Lock()
	defer e.mu.Unlock()
	vals, err := m.values()
	if err != nil {
		return nil, err
	}
	ver := [2]uint64{m.baseVersion.Load(), m.loraVersion.Load()}
	if e.lm != nil && slices.Equal(e.lm.src, vals) && e.lm.ver == ver {
		return e.lm, nil
	}
	f, err := e.pack()
	if err != nil {
		return nil, err
	}
	f.src, f.ver = vals, ver
	e.lm = f
	return f, nil
}

// bf16Bits copies a bfloat16 variable's values as their bits.
func bf16Bits(v *mlctx.Variable) ([]uint16, error) {
	b, err := tensors.CopyFlatData[bfloat16.BFloat16](v.MustValue())
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)), nil
}

// weight returns a tensor's current values with its LoRA adapter (if any) folded in.
func (m *Model) weight(name string) ([]float32, error) {
	w, err := m.floats(name)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	mod, ok := strings.CutSuffix(name, ".weight")
	if !ok || m.lora == nil || !m.lora.modules[mod] {
		return w, nil
	}
	a := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_A.weight").MustValue()
	b := m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+".lora_B.weight").MustValue()
	r, in := a.Shape().Dimensions[0], a.Shape().Dimensions[1]
	out := b.Shape().Dimensions[0]
	ad, bd := tensors.MustCopyFlatData[float32](a), tensors.MustCopyFlatData[float32](b)
	delta := make([]float32, out*in) // ΔW = scale·B·A: B [out][r] times A [r][in]
	cpu.MatMul(delta, bd, out, cpu.PackTransposed(ad, r, in))
	for i, d := range delta {
		w[i] += float32(m.lora.scale) * d
	}
	return w, nil
}

// adapts reports whether the model's adapter changes any of the projections.
func (m *Model) adapts(ps ...proj) bool {
	if m.lora == nil {
		return false
	}
	return slices.ContainsFunc(ps, func(p proj) bool { return m.lora.modules[strings.TrimSuffix(p.weight, ".weight")] })
}

func (e *cpuEngine) pack() (*packedLM, error) {
	m := e.m
	d := m.desc
	f := &packedLM{d: d}
	var err error
	get := func(name string) []float32 {
		if err != nil || name == "" {
			return nil
		}
		var w []float32
		w, err = m.weight(name)
		return w
	}
	// A model sharing a base's weights (WithAdapter) takes from the base's packing every
	// matrix its adapter leaves unchanged, so it costs only the matrices the adapter changes.
	var shared *packedLM
	if m.base != nil {
		if shared, err = m.base.eng.(*cpuEngine).packed(); err != nil {
			return nil, err
		}
	}
	// A matrix the checkpoint holds in bf16 and no adapter changes is packed in bf16: half the
	// memory, and the same products (the kernels widen it exactly).
	half := func(name string) []uint16 {
		v := m.Variable(name)
		if err != nil || v.DType() != dtypes.BFloat16 || m.adapts(proj{weight: name}) {
			return nil
		}
		h, e := bf16Bits(v)
		if e != nil {
			err = fmt.Errorf("tensor %q: %w", name, e)
		}
		return h
	}
	packHalf := func(ps []proj) *cpu.Packed {
		if m.adapts(ps...) {
			return nil
		}
		return e.bf16Pack(ps)
	}
	// pack packs projections fused along their outputs (a Conv1D as stored, [in][out]), unless
	// the base's packing of them can be shared.
	pack := func(ps []proj, sharedP *cpu.Packed) *cpu.Packed {
		if shared != nil && !m.adapts(ps...) {
			return sharedP
		}
		if p := packHalf(ps); p != nil {
			return p
		}
		if len(ps) == 1 && ps[0].conv {
			return cpu.PackTransposed(get(ps[0].weight), ps[0].in, ps[0].out)
		}
		ws := make([][]float32, len(ps))
		for i, p := range ps {
			ws[i] = get(p.weight)
		}
		if err != nil {
			return nil
		}
		return cpu.PackRows(ws, ps[0].in)
	}
	biases := func(ps ...proj) []float32 {
		if !slices.ContainsFunc(ps, func(p proj) bool { return p.bias != "" }) {
			return nil
		}
		var out []float32
		for _, p := range ps {
			if b := get(p.bias); b != nil {
				out = append(out, b...)
			} else {
				out = append(out, make([]float32, p.out)...)
			}
		}
		return out
	}
	f.tied = d.head.weight == d.embed
	switch {
	case shared != nil:
		f.embed, f.embedH, f.wpe = shared.embed, shared.embedH, shared.wpe
	case f.tied:
		f.wpe = get(d.positions)
	default:
		if f.embedH = half(d.embed); f.embedH == nil {
			f.embed = get(d.embed)
		}
		f.wpe = get(d.positions)
	}
	for l, ld := range d.layers {
		ly := packedLayer{ln1w: get(ld.ln1.w), ln1b: get(ld.ln1.b), ln2w: get(ld.ln2.w), ln2b: get(ld.ln2.b),
			qn: get(ld.qNorm), kn: get(ld.kNorm), scale: float32(ld.scale),
			qkvb: biases(ld.qkv...), ob: biases(ld.o), upb: biases(ld.up...), downb: biases(ld.down)}
		var sl packedLayer
		if shared != nil {
			sl = shared.layers[l]
		}
		ly.qkv, ly.o = pack(ld.qkv, sl.qkv), pack([]proj{ld.o}, sl.o)
		ly.up, ly.down = pack(ld.up, sl.up), pack([]proj{ld.down}, sl.down)
		f.layers = append(f.layers, ly)
	}
	f.normW, f.normB = get(d.final.w), get(d.final.b)
	switch {
	case shared != nil:
		f.head = shared.head
	case f.tied:
		if f.head = e.bf16Pack([]proj{d.head}); f.head == nil {
			f.head = cpu.Pack(get(d.embed), d.head.out, d.D)
		}
	default:
		f.head = pack([]proj{d.head}, nil)
	}
	return f, err
}

// kvCache holds one sequence's keys and values for every layer: [layer][slot][Hkv·hd].
type kvCache struct {
	k, v [][]float32
	n    int // slots filled
	cap  int
}

func (f *packedLM) newCache(capacity int) *kvCache {
	kvd := f.d.Hkv * f.d.hd
	kc := &kvCache{cap: capacity}
	for range f.layers {
		kc.k = append(kc.k, make([]float32, capacity*kvd))
		kc.v = append(kc.v, make([]float32, capacity*kvd))
	}
	return kc
}

// forward appends tokens[s] to the sequences whose caches are given (each continuing at its
// cache's length) and returns the final-normed hidden states of every new token, the
// sequences' tokens one after the other [Σ len(tokens[s])][D].
func (f *packedLM) forward(tokens [][]int, caches []*kvCache) []float32 {
	d := f.d
	D, qd, kvd := d.D, d.H*d.hd, d.Hkv*d.hd
	var rows []rowInfo
	for s, ts := range tokens {
		for i := range ts {
			rows = append(rows, rowInfo{s, caches[s].n + i})
		}
	}
	M := len(rows)
	x := make([]float32, M*D)
	for r, ri := range rows {
		f.embedRow(x[r*D:(r+1)*D], tokens[ri.seq][ri.pos-caches[ri.seq].n])
		if f.wpe != nil {
			cpu.Add(x[r*D:(r+1)*D], f.wpe[ri.pos*D:(ri.pos+1)*D])
		}
	}
	h := make([]float32, M*D)
	qkv := make([]float32, M*(qd+2*kvd))
	att := make([]float32, M*qd)
	up := make([]float32, M*f.layers[0].up.N)
	act := make([]float32, M*d.I)
	out := make([]float32, M*D)
	var cos, sin []float32
	if d.rope != nil {
		cos, sin = ropeTables(d.rope, rows)
	}
	for l, ly := range f.layers {
		f.norm(h, x, ly.ln1w, ly.ln1b)
		cpu.MatMul(qkv, h, M, ly.qkv)
		if ly.qkvb != nil {
			cpu.AddBias(qkv, ly.qkvb)
		}
		half := d.hd / 2
		for r, ri := range rows {
			row := qkv[r*(qd+2*kvd) : (r+1)*(qd+2*kvd)]
			if ly.qn != nil {
				cpu.RMSNorm(row[:qd], row[:qd], ly.qn, d.hd, d.eps)
				cpu.RMSNorm(row[qd:qd+kvd], row[qd:qd+kvd], ly.kn, d.hd, d.eps)
			}
			if cos != nil {
				rotateHeads(row, d.H+d.Hkv, d.hd, cos[r*half:(r+1)*half], sin[r*half:(r+1)*half])
			}
			kc := caches[ri.seq]
			copy(kc.k[l][ri.pos*kvd:(ri.pos+1)*kvd], row[qd:qd+kvd])
			copy(kc.v[l][ri.pos*kvd:(ri.pos+1)*kvd], row[qd+kvd:])
		}
		f.attend(l, ly.scale, rows, qkv, att, caches)
		cpu.MatMul(out, att, M, ly.o)
		if ly.ob != nil {
			cpu.AddBias(out, ly.ob)
		}
		cpu.Add(x, out)
		f.norm(h, x, ly.ln2w, ly.ln2b)
		cpu.MatMul(up, h, M, ly.up)
		if ly.upb != nil {
			cpu.AddBias(up, ly.upb)
		}
		cpu.MatMul(out, activate(d.act, act, up, d.I), M, ly.down)
		if ly.downb != nil {
			cpu.AddBias(out, ly.downb)
		}
		cpu.Add(x, out)
	}
	for s, ts := range tokens {
		caches[s].n += len(ts)
	}
	f.norm(h, x, f.normW, f.normB)
	return h
}

// embedRow sets x to token id's embedding.
func (f *packedLM) embedRow(x []float32, id int) {
	switch {
	case f.tied:
		f.head.Row(id, x)
		return
	case f.embedH == nil:
		copy(x, f.embed[id*len(x):])
		return
	}
	for i, h := range f.embedH[id*len(x) : (id+1)*len(x)] {
		x[i] = math.Float32frombits(uint32(h) << 16)
	}
}

// activate applies the MLP's activation to the up projection's output and returns the result:
// silu(gate)·up into act for SwiGLU (up holds [gate | up] rows of 2n), GELU in place otherwise.
func activate(kind actKind, act, up []float32, n int) []float32 {
	switch kind {
	case actGELUTanh:
		cpu.GELUTanh(up)
	case actGELUErf:
		cpu.GELUErf(up)
	default:
		cpu.SwiGLU(act, up, n)
		return act
	}
	return up
}

// rowInfo places one new token: its sequence and its position there.
type rowInfo struct{ seq, pos int }

func (f *packedLM) norm(out, x, w, b []float32) {
	normRows(f.d, out, x, w, b)
}

// normRows applies the description's norm to rows of D values; for RMSNorm it returns each
// row's 1/sqrt(mean(x²) + eps), for LayerNorm nil.
func normRows(d *desc, out, x, w, b []float32) []float32 {
	if d.norm == layerNormKind {
		cpu.LayerNorm(out, x, w, b, d.D, d.eps)
		return nil
	}
	return cpu.RMSNorm(out, x, w, d.D, d.eps)
}

// ropeTables returns cos and sin [rows][hd/2] of each row's position for the inverse
// frequencies inv, computed in float32 as transformers does (position × frequency, then cos
// and sin).
func ropeTables(inv []float32, rows []rowInfo) (cos, sin []float32) {
	half := len(inv)
	cos, sin = make([]float32, len(rows)*half), make([]float32, len(rows)*half)
	for r, ri := range rows {
		p := float32(ri.pos)
		for i, fr := range inv {
			a := float64(p * fr)
			cos[r*half+i], sin[r*half+i] = float32(math.Cos(a)), float32(math.Sin(a))
		}
	}
	return cos, sin
}

// rotateHeads applies RoPE to the first heads heads of a row of q|k|v (the q heads, then the k
// heads), with that row's cos and sin.
func rotateHeads(row []float32, heads, hd int, cos, sin []float32) {
	for h := 0; h < heads; h++ {
		rotate(row[h*hd:(h+1)*hd], cos, sin)
	}
}

// rotate applies HF's rotate_half RoPE to one head: x·cos + rotate_half(x)·sin.
func rotate(x, cos, sin []float32) {
	half := len(cos)
	for i := 0; i < half; i++ {
		a, b := x[i], x[i+half]
		x[i] = a*cos[i] - b*sin[i]
		x[i+half] = b*cos[i] + a*sin[i]
	}
}

// windowStart is the first key position a query at pos sees (a sliding window of window
// positions; 0: no window).
func windowStart(pos, window int) int {
	if window > 0 {
		return max(0, pos-window+1)
	}
	return 0
}

// attendHead is one head of one query: probs[t-first] = softmax(q·k_t·scale) over key
// positions first..last, and out = Σ probs·v_t, where k_t and v_t are the len(q) values at
// keys[t·stride:] and vals[t·stride:].
func attendHead(q, keys, vals []float32, stride, first, last int, scale float32, probs, out []float32) {
	hd := len(q)
	for t := first; t <= last; t++ {
		probs[t-first] = cpu.Dot(q, keys[t*stride:t*stride+hd]) * scale
	}
	cpu.SoftmaxInPlace(probs)
	clear(out)
	for t := first; t <= last; t++ {
		cpu.Axpy(probs[t-first], vals[t*stride:t*stride+hd], out)
	}
}

// attend computes, for every row (a query at pos in sequence seq), softmax(q·kᵀ·scale)·v over
// that sequence's cached keys 0..pos (within the sliding window), head by head, grouped-query.
func (f *packedLM) attend(l int, scale float32, rows []rowInfo, qkv, att []float32, caches []*kvCache) {
	c := f.d
	qd, kvd := c.H*c.hd, c.Hkv*c.hd
	group := c.H / c.Hkv
	// Work is split by row, or for a single row (decoding one sequence) by head.
	heads := 1
	if len(rows) == 1 {
		heads = c.H
	}
	cpu.Parallel(len(rows)*heads, func(lo, hi int) {
		var scores []float32
		for u := lo; u < hi; u++ {
			r := u / heads
			pos := rows[r].pos
			kc := caches[rows[r].seq]
			first := windowStart(pos, c.window)
			n := pos + 1 - first
			scores = slices.Grow(scores[:0], n)[:n]
			h0, h1 := 0, c.H
			if heads > 1 {
				h0, h1 = u%heads, u%heads+1
			}
			for hh := h0; hh < h1; hh++ {
				kh := hh / group
				attendHead(qkv[r*(qd+2*kvd)+hh*c.hd:r*(qd+2*kvd)+(hh+1)*c.hd], kc.k[l][kh*c.hd:], kc.v[l][kh*c.hd:], kvd,
					first, pos, scale, scores, att[r*qd+hh*c.hd:r*qd+(hh+1)*c.hd])
			}
		}
	})
}

// maxRowsPerPass bounds the tokens one forward pass holds, so memory stays flat however many
// sequences are scored; logits are computed in slices of logitRows.
const (
	maxRowsPerPass = 4096
	logitRows      = 256
)

// checkSeqs refuses what the kernels cannot index: unknown token ids, too many positions.
func (m *Model) checkSeqs(seqs [][]int, minLen int) error {
	for i, s := range seqs {
		if len(s) < minLen {
			return fmt.Errorf("sequence %d has %d tokens; at least %d needed", i, len(s), minLen)
		}
		if len(s) > m.Config.MaxPositions {
			return fmt.Errorf("sequence of %d tokens exceeds the model's %d positions", len(s), m.Config.MaxPositions)
		}
		for _, id := range s {
			if id < 0 || id >= m.Config.VocabSize {
				return fmt.Errorf("sequence %d: token id %d outside the vocabulary (%d)", i, id, m.Config.VocabSize)
			}
		}
	}
	return nil
}

// passes runs the sequences through the model in groups of at most maxRowsPerPass tokens
// and hands each group's hidden states to fn, with the row where each sequence starts.
func (e *cpuEngine) passes(ctx context.Context, seqs [][]int, fn func(f *packedLM, group []int, h []float32, start []int)) error {
	f, err := e.packed()
	if err != nil {
		return err
	}
	for i := 0; i < len(seqs); {
		if err := ctx.Err(); err != nil {
			return err
		}
		var group []int
		var toks [][]int
		var caches []*kvCache
		var start []int
		rows := 0
		for ; i < len(seqs) && (len(group) == 0 || rows+len(seqs[i]) <= maxRowsPerPass); i++ {
			group = append(group, i)
			toks = append(toks, seqs[i])
			caches = append(caches, f.newCache(len(seqs[i])))
			start = append(start, rows)
			rows += len(seqs[i])
		}
		fn(f, group, f.forward(toks, caches), start)
	}
	return nil
}

// headRows computes the head's outputs [n][N] for the hidden states of rows picked by at.
func (f *packedLM) headRows(h []float32, n int, at func(i int) int) []float32 {
	D := f.d.D
	sel := make([]float32, n*D)
	for i := 0; i < n; i++ {
		copy(sel[i*D:(i+1)*D], h[at(i)*D:])
	}
	out := make([]float32, n*f.head.N)
	cpu.MatMul(out, sel, n, f.head)
	return out
}

func (e *cpuEngine) logProbs(ctx context.Context, seqs [][]int) ([][]float32, error) {
	if err := e.m.checkSeqs(seqs, 2); err != nil {
		return nil, err
	}
	out := make([][]float32, len(seqs))
	err := e.passes(ctx, seqs, func(f *packedLM, group []int, h []float32, start []int) {
		// Every row but each sequence's last predicts the next token.
		type pred struct{ row, seq, t int }
		var preds []pred
		for g, j := range group {
			out[j] = make([]float32, len(seqs[j])-1)
			for t := 0; t+1 < len(seqs[j]); t++ {
				preds = append(preds, pred{start[g] + t, j, t})
			}
		}
		for lo := 0; lo < len(preds); lo += logitRows {
			chunk := preds[lo:min(lo+logitRows, len(preds))]
			logits := f.headRows(h, len(chunk), func(i int) int { return chunk[i].row })
			V := f.head.N
			cpu.Parallel(len(chunk), func(a, b int) {
				for i := a; i < b; i++ {
					p := chunk[i]
					out[p.seq][p.t] = float32(cpu.LogSoftmaxAt(logits[i*V:(i+1)*V], seqs[p.seq][p.t+1]))
				}
			})
		}
	})
	return out, err
}

func (e *cpuEngine) logits(ctx context.Context, seqs [][]int) ([][][]float32, error) {
	if err := e.m.checkSeqs(seqs, 1); err != nil {
		return nil, err
	}
	out := make([][][]float32, len(seqs))
	err := e.passes(ctx, seqs, func(f *packedLM, group []int, h []float32, start []int) {
		for g, j := range group {
			n := len(seqs[j])
			flat := f.headRows(h, n, func(i int) int { return start[g] + i })
			out[j] = make([][]float32, n)
			for t := range out[j] {
				out[j][t] = flat[t*f.head.N : (t+1)*f.head.N]
			}
		}
	})
	return out, err
}

// cpuDecoder decodes rows with one KV cache each: every row keeps its own positions, so no
// row is padded and a row's results never depend on the others.
type cpuDecoder struct {
	m      *Model
	f      *packedLM
	prompt [][]int
	caches []*kvCache
	last   [][]float32 // each row's latest logits
	// recompute runs every step over the whole sequence from an empty cache, as transformers
	// does with use_cache=False: the KV cache's baseline.
	recompute bool
	seqs      [][]int // with recompute: each row's tokens so far
}

func (e *cpuEngine) decoder(prompts [][]int, budgets []int, useCache bool) (Decoder, error) {
	if err := e.m.checkSeqs(prompts, 1); err != nil {
		return nil, err
	}
	f, err := e.packed()
	if err != nil {
		return nil, err
	}
	d := &cpuDecoder{m: e.m, f: f, prompt: prompts, last: make([][]float32, len(prompts)), recompute: !useCache}
	for i, p := range prompts {
		if d.recompute { // the cache only counts the tokens
			d.caches = append(d.caches, &kvCache{cap: len(p) + budgets[i]})
			d.seqs = append(d.seqs, nil)
		} else {
			d.caches = append(d.caches, f.newCache(len(p)+budgets[i]))
		}
	}
	return d, nil
}

// run feeds toks[i] to row rows[i] and records each row's last logits.
func (d *cpuDecoder) run(rows []int, toks [][]int) {
	caches := make([]*kvCache, len(rows))
	for i, r := range rows {
		caches[i] = d.caches[r]
		if d.recompute {
			d.seqs[r] = append(d.seqs[r], toks[i]...)
			toks[i] = d.seqs[r]
			caches[i] = d.f.newCache(len(d.seqs[r]))
		}
	}
	h := d.f.forward(toks, caches)
	if d.recompute {
		for _, r := range rows {
			d.caches[r].n = len(d.seqs[r])
		}
	}
	end := 0
	lastRow := make([]int, len(rows))
	for i, t := range toks {
		end += len(t)
		lastRow[i] = end - 1
	}
	logits := d.f.headRows(h, len(rows), func(i int) int { return lastRow[i] })
	V := d.f.head.N
	for i, r := range rows {
		d.last[r] = logits[i*V : (i+1)*V]
	}
}

func (d *cpuDecoder) Start() ([][]float32, error) {
	rows := make([]int, len(d.prompt))
	for i := range rows {
		rows[i] = i
	}
	d.run(rows, d.prompt)
	return d.last, nil
}

// Step appends one token per row; a row given a negative token, or whose budget is spent,
// is left as it is (its logits are the previous ones).
func (d *cpuDecoder) Step(tokens []int) ([][]float32, error) {
	var rows []int
	var toks [][]int
	for r, t := range tokens {
		if t < 0 {
			continue
		}
		if t >= d.m.Config.VocabSize {
			return nil, fmt.Errorf("row %d: token id %d outside the vocabulary", r, t)
		}
		if d.caches[r].n < d.caches[r].cap {
			rows, toks = append(rows, r), append(toks, []int{t})
		}
	}
	if len(rows) > 0 {
		d.run(rows, toks)
	}
	return d.last, nil
}
