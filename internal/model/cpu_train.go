package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/cpu"
)

// Training on the own CPU engine: a forward pass over whole sequences that keeps its
// activations, and the backward pass that turns the gradient of each token's log-probability
// (or of a reward head's score) into gradients of the trainable tensors, full fine-tuning or
// LoRA. It computes from the architecture's description as cpu.go does; the conformance tests
// check its gradients against finite differences and against the graph engine's.

// trainLinear is one (possibly fused) linear layer: W [n][in] packed (the backward pass reads
// the same packing transposed), its tensors' names by output block, and the adapters on its
// blocks.
type trainLinear struct {
	n, in int
	w     *cpu.Packed
	// packW makes w when it is not kept (nil).
	packW  func() *cpu.Packed
	bias   []float32
	blocks []linBlock
}

type linBlock struct {
	name     string // checkpoint tensor of this block of output rows
	bias     string // its bias tensor, "" if none
	off, out int    // output columns [off, off+out)
	conv     bool   // stored [in][out] (a GPT-2 Conv1D, always the layer's only block)
	lora     *loraLin
}

type loraLin struct {
	module   string
	r        int
	pa, pb   *cpu.Packed // for u = xd·Aᵀ and u·Bᵀ (read transposed for du·A and dy·B)
	scale    float32
	dropout  float64
	dropSeed uint64
}

type trainLayer struct {
	ld                   *layerDesc
	ln1, ln1b, ln2, ln2b []float32
	qn, kn               []float32 // per-head q and k norms (nil: none)
	qkv, o, up, dn       trainLinear
}

type trainWeights struct {
	d      *desc
	embed  []float32 // nil: read from the head's packing (a frozen embedding tied to it)
	wpe    []float32
	layers []trainLayer
	norm   []float32
	normB  []float32
	head   trainLinear
}

func (m *Model) value(scope, name string) []float32 {
	if name == "" {
		return nil
	}
	data, err := floatData(m.Ctx.GetVariableByScopeAndName(scope, name).MustValue())
	if err != nil {
		panic(fmt.Errorf("tensor %q: %w", name, err))
	}
	return data
}

// withValues calls fn with the values of the named tensors, read in place (no copy) unless a
// frozen base kept in bf16 is widened; they are valid only during fn.
func (m *Model) withValues(names []string, fn func(vals [][]float32)) {
	err := inPlace(m, names, func(val *tensors.Tensor, use func([]float32)) error {
		if val.DType() != dtypes.Float32 {
			data, err := floatData(val)
			if err == nil {
				use(data)
			}
			return err
		}
		return tensors.ConstFlatData(val, use)
	}, fn)
	if err != nil {
		panic(err)
	}
}

// trainCache keeps the packed base weights while they cannot change (LoRA training).
type trainCache struct {
	key     []*tensors.Tensor
	version uint64
	w       *trainWeights
}

// trainWeights packs the current base weights (without adapters folded in: the adapters run
// as their own branch, so that their gradients exist and dropout applies), then attaches the
// adapters' current values. Under LoRA the frozen base packing is made once and reused.
func (e *cpuEngine) trainWeights(drop Dropout) *trainWeights {
	m := e.m
	var key []*tensors.Tensor
	for _, n := range m.names {
		key = append(key, m.Variable(n).MustValue())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var w *trainWeights
	if c := e.train; m.lora != nil && c != nil && slices.Equal(c.key, key) && c.version == m.baseVersion.Load() {
		w = c.w
	} else {
		w = e.packBase()
		e.train = nil
		if m.lora != nil {
			e.train = &trainCache{key: key, version: m.baseVersion.Load(), w: w}
		}
	}
	for _, l := range w.linears() {
		for bi := range l.blocks {
			blk := &l.blocks[bi]
			blk.lora = nil
			mod := strings.TrimSuffix(blk.name, ".weight")
			if m.lora == nil || !m.lora.modules[mod] {
				continue
			}
			a, b := m.value(LoRAScope, mod+".lora_A.weight"), m.value(LoRAScope, mod+".lora_B.weight")
			r := len(a) / l.in
			blk.lora = &loraLin{module: mod, r: r, pa: cpu.Pack(a, r, l.in), pb: cpu.Pack(b, blk.out, r), scale: float32(m.lora.scale),
				dropout: drop.Rate, dropSeed: drop.Seed ^ hashName(mod)}
		}
	}
	return w
}

// linears lists every linear layer of the weights, the head included.
func (w *trainWeights) linears() []*trainLinear {
	var out []*trainLinear
	for i := range w.layers {
		ly := &w.layers[i]
		out = append(out, &ly.qkv, &ly.o, &ly.up, &ly.dn)
	}
	return append(out, &w.head)
}

// packBase packs the base weights for training. A frozen base kept in bf16 stays bf16 (its
// forward packing shared with inference).
func (e *cpuEngine) packBase() *trainWeights {
	m := e.m
	d := m.desc
	w := &trainWeights{d: d}
	get := func(n string) []float32 { return m.value(WeightScope, n) }
	linear := func(ps ...proj) trainLinear {
		l := trainLinear{in: ps[0].in}
		for _, p := range ps {
			l.blocks = append(l.blocks, linBlock{name: p.weight, bias: p.bias, off: l.n, out: p.out, conv: p.conv})
			l.n += p.out
		}
		l.w = e.bf16Pack(ps)
		weights := make([]string, len(ps))
		for i, p := range ps {
			weights[i] = p.weight
		}
		// The fused layer is packed from its parts where they are stored.
		pack := func() *cpu.Packed {
			var p *cpu.Packed
			m.withValues(weights, func(vals [][]float32) {
				if ps[0].conv {
					p = cpu.PackTransposed(vals[0], l.in, l.n)
				} else {
					p = cpu.PackRows(vals, l.in)
				}
			})
			return p
		}
		switch {
		case l.w != nil:
		case m.lora != nil: // a frozen base: packed once, kept while it does not change
			l.w = pack()
		default:
			// Weights that train change every step, so they are packed every step anyway: each
			// layer when the pass reaches it, dropped after, rather than every layer held at once.
			l.packW = pack
		}
		for _, blk := range l.blocks {
			if blk.bias != "" {
				if l.bias == nil {
					l.bias = make([]float32, l.n)
				}
				copy(l.bias[blk.off:], get(blk.bias))
			}
		}
		return l
	}
	// A frozen embedding tied to the head is read from the head's packing (held once).
	if m.lora == nil || d.head.weight != d.embed {
		w.embed = get(d.embed)
	}
	w.wpe = get(d.positions)
	for i := range d.layers {
		ld := &d.layers[i]
		w.layers = append(w.layers, trainLayer{ld: ld,
			ln1: get(ld.ln1.w), ln1b: get(ld.ln1.b), ln2: get(ld.ln2.w), ln2b: get(ld.ln2.b),
			qn: get(ld.qNorm), kn: get(ld.kNorm),
			qkv: linear(ld.qkv...), o: linear(ld.o), up: linear(ld.up...), dn: linear(ld.down),
		})
	}
	w.norm, w.normB = get(d.final.w), get(d.final.b)
	w.head = linear(d.head)
	return w
}

// linActs is what a linear layer's backward pass needs of its forward pass.
type linActs struct {
	x    []float32   // input [M][in]
	lora [][]float32 // per block with an adapter: u = dropout(x)·Aᵀ [M][r]
	keep [][]float32 // per block: the dropout scale of each input (0 or 1/(1-p)); nil: none
}

// forward sets y [M][n] = x·Wᵀ + bias + Σ adapters, keeping what backward needs.
func (l *trainLinear) forward(y, x []float32, M int, seed uint64) linActs {
	acts := linActs{x: x, lora: make([][]float32, len(l.blocks)), keep: make([][]float32, len(l.blocks))}
	w := l.w
	if w == nil {
		w = l.packW()
	}
	cpu.MatMul(y, x, M, w)
	if l.bias != nil {
		cpu.AddBias(y, l.bias)
	}
	for bi, blk := range l.blocks {
		lo := blk.lora
		if lo == nil {
			continue
		}
		xd := x
		if lo.dropout > 0 {
			keep := make([]float32, len(x))
			rng := rand.New(rand.NewPCG(seed, lo.dropSeed))
			xd = make([]float32, len(x))
			for i, v := range x {
				if rng.Float64() >= lo.dropout {
					keep[i] = float32(1 / (1 - lo.dropout))
					xd[i] = v * keep[i]
				}
			}
			acts.keep[bi] = keep
		}
		u := make([]float32, M*lo.r)
		cpu.MatMul(u, xd, M, lo.pa)
		yl := make([]float32, M*blk.out)
		cpu.MatMul(yl, u, M, lo.pb)
		for r := 0; r < M; r++ {
			row := y[r*l.n+blk.off : r*l.n+blk.off+blk.out]
			for j, v := range yl[r*blk.out : (r+1)*blk.out] {
				row[j] += lo.scale * v
			}
		}
		acts.lora[bi] = u
	}
	return acts
}

// backward adds the input gradient dy·W (and the adapters') into dx [M][in], and the weight,
// bias and adapter gradients into g, accumulating in place.
func (l *trainLinear) backward(dx, dy []float32, M int, a linActs, g *Grads) {
	w := l.w
	if w == nil {
		w = l.packW()
	}
	cpu.MatMulTAdd(dx, dy, M, w)
	if len(g.Base) > 0 {
		dyT := cpu.Transpose(dy, M, l.n) // [n][M]: each output block's rows are contiguous
		xT := cpu.PackTransposed(a.x, M, l.in)
		for _, blk := range l.blocks {
			if blk.conv { // stored [in][out]: the gradient is xᵀ·dy
				cpu.AddMatMulTN(g.Base[blk.name], a.x, dy, M, l.in, l.n)
			} else {
				cpu.MatMulAdd(g.Base[blk.name], dyT[blk.off*M:(blk.off+blk.out)*M], blk.out, xT)
			}
			if blk.bias != "" {
				gb := g.Base[blk.bias]
				for j := range gb {
					s := float32(0)
					for _, v := range dyT[(blk.off+j)*M : (blk.off+j+1)*M] {
						s += v
					}
					gb[j] += s
				}
			}
		}
	}
	for bi, blk := range l.blocks {
		lo := blk.lora
		if lo == nil {
			continue
		}
		dyb := make([]float32, M*blk.out) // this block's columns, scaled by the adapter's scale
		for r := 0; r < M; r++ {
			for j, v := range dy[r*l.n+blk.off : r*l.n+blk.off+blk.out] {
				dyb[r*blk.out+j] = lo.scale * v
			}
		}
		u := a.lora[bi]
		cpu.AddMatMulTN(g.LoRA[lo.module+".lora_B.weight"], dyb, u, M, blk.out, lo.r)
		du := make([]float32, M*lo.r)
		cpu.MatMulTAdd(du, dyb, M, lo.pb)
		keep := a.keep[bi]
		xd := a.x
		if keep != nil {
			xd = make([]float32, len(a.x))
			for i, v := range a.x {
				xd[i] = v * keep[i]
			}
		}
		cpu.AddMatMulTN(g.LoRA[lo.module+".lora_A.weight"], du, xd, M, lo.r, l.in)
		if keep == nil {
			cpu.MatMulTAdd(dx, du, M, lo.pa)
			continue
		}
		dxl := make([]float32, M*l.in)
		cpu.MatMulTAdd(dxl, du, M, lo.pa)
		for i := range dxl {
			dx[i] += dxl[i] * keep[i]
		}
	}
}

// rmsBackward adds to dx the gradient through y = x·inv·w, and to dw (if not nil).
func rmsBackward(dx, dy, x, w, inv []float32, d int, dw []float32) {
	for r := 0; r < len(inv); r++ {
		xr, dyr, dxr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d], dx[r*d:(r+1)*d]
		s := 0.0
		for i, v := range dyr {
			s += float64(v * w[i] * xr[i])
		}
		c := float32(s) * inv[r] * inv[r] * inv[r] / float32(d)
		for i, v := range dyr {
			dxr[i] += v*w[i]*inv[r] - xr[i]*c
			if dw != nil {
				dw[i] += v * xr[i] * inv[r]
			}
		}
	}
}

type layerActs struct {
	x, h1, xMid, h2, gu, act, att, qkv []float32
	inv1, inv2                         []float32 // RMSNorm's 1/rms per row (nil for LayerNorm)
	qkPre                              []float32 // with per-head q/k norms: q|k of each row before them
	qkInv                              []float32 // their 1/rms per row and head
	probs                              []float32 // per row and head, the attention weights over its keys
	probOff                            []int     // where row r's weights start
	qkvA, oA, upA, dnA                 linActs
}

// cpuPass is a forward pass over whole sequences that keeps its activations.
type cpuPass struct {
	w        *trainWeights
	seqs     [][]int
	rows     []rowInfo
	start    []int
	cos, sin []float32
	layers   []layerActs
	xOut, hF []float32
	invF     []float32
	// The head's logits and activations, kept when they fit in one chunk (headRows); past
	// that the backward pass computes each chunk again.
	headA  linActs
	logits []float32 // [M][head outputs]
	done   bool      // Backward ran
	// recompute keeps only each layer's input and runs the layer again in the backward pass
	// (Model.Recompute).
	recompute bool
}

// headFloats bounds the logits a training pass holds at once: a LoRA step of a model with a
// 151,936-word vocabulary would otherwise hold 0.6 MB a token (1.5 GB for 16 candidates).
var headFloats = 1 << 25 // a variable for the test that forces chunks

// headRows is how many rows' logits a chunk holds: all M when they fit (then nothing is
// computed twice), else a multiple of 8 (a row tile).
func headRows(M, N int) int {
	if M*N <= headFloats {
		return M
	}
	return max(8, headFloats/N/8*8)
}

func (e *cpuEngine) trainForward(seqs [][]int, drop Dropout) (TrainPass, [][]float32, error) {
	if err := e.m.checkSeqs(seqs, 1); err != nil {
		return nil, nil, err
	}
	w := e.trainWeights(drop)
	d := w.d
	p := &cpuPass{w: w, seqs: seqs, recompute: e.m.Recompute}
	for s, seq := range seqs {
		p.start = append(p.start, len(p.rows))
		for i := range seq {
			p.rows = append(p.rows, rowInfo{s, i})
		}
	}
	M, D := len(p.rows), d.D
	if d.rope != nil {
		p.cos, p.sin = ropeTables(d.rope, p.rows)
	}
	x := make([]float32, M*D)
	for r, ri := range p.rows {
		if tok := seqs[ri.seq][ri.pos]; w.embed != nil {
			copy(x[r*D:(r+1)*D], w.embed[tok*D:])
		} else {
			w.head.w.Row(tok, x[r*D:(r+1)*D])
		}
		if w.wpe != nil {
			cpu.Add(x[r*D:(r+1)*D], w.wpe[ri.pos*D:(ri.pos+1)*D])
		}
	}
	for li := range w.layers {
		a, next := p.layerForward(li, x)
		if p.recompute {
			a = layerActs{x: x} // the rest is computed again in the backward pass
		}
		p.layers = append(p.layers, a)
		x = next
	}
	p.xOut = x
	p.hF = make([]float32, M*D)
	p.invF = normRows(d, p.hF, x, w.norm, w.normB)
	out := make([][]float32, len(seqs))
	for s, seq := range seqs {
		if d.labels > 0 {
			out[s] = make([]float32, len(seq))
		} else {
			out[s] = make([]float32, len(seq)-1)
		}
	}
	N := w.head.n
	per := headRows(M, N)
	logits := make([]float32, per*N)
	for r0 := 0; r0 < M; r0 += per {
		n := min(per, M-r0)
		acts := w.head.forward(logits[:n*N], p.hF[r0*D:(r0+n)*D], n, 0)
		if per == M {
			p.logits, p.headA = logits, acts
		}
		for r := r0; r < r0+n; r++ {
			ri, row := p.rows[r], logits[(r-r0)*N:(r-r0+1)*N]
			switch {
			case d.labels > 0:
				out[ri.seq][ri.pos] = row[0]
			case ri.pos+1 < len(seqs[ri.seq]):
				out[ri.seq][ri.pos] = float32(cpu.LogSoftmaxAt(row, seqs[ri.seq][ri.pos+1]))
			}
		}
	}
	return p, out, nil
}

// layerForward runs layer li on its input x [M][D], keeping what the backward pass needs,
// and returns those activations and the layer's output.
func (p *cpuPass) layerForward(li int, x []float32) (layerActs, []float32) {
	w := p.w
	d := w.d
	M, D := len(p.rows), d.D
	qd, kvd := d.H*d.hd, d.Hkv*d.hd
	half := d.hd / 2
	ly := &w.layers[li]
	a := layerActs{x: x}
	a.h1 = make([]float32, M*D)
	a.inv1 = normRows(d, a.h1, x, ly.ln1, ly.ln1b)
	a.qkv = make([]float32, M*ly.qkv.n)
	a.qkvA = ly.qkv.forward(a.qkv, a.h1, M, uint64(li)<<8|1)
	if ly.qn != nil {
		a.qkPre = make([]float32, M*(qd+kvd))
		a.qkInv = make([]float32, 0, M*(d.H+d.Hkv))
		for r := range p.rows {
			row := a.qkv[r*ly.qkv.n:]
			copy(a.qkPre[r*(qd+kvd):], row[:qd+kvd])
			a.qkInv = append(a.qkInv, cpu.RMSNorm(row[:qd], row[:qd], ly.qn, d.hd, d.eps)...)
			a.qkInv = append(a.qkInv, cpu.RMSNorm(row[qd:qd+kvd], row[qd:qd+kvd], ly.kn, d.hd, d.eps)...)
		}
	}
	if p.cos != nil {
		for r := range p.rows {
			rotateHeads(a.qkv[r*ly.qkv.n:], d.H+d.Hkv, d.hd, p.cos[r*half:(r+1)*half], p.sin[r*half:(r+1)*half])
		}
	}
	a.att = make([]float32, M*qd)
	a.probs, a.probOff = p.attend(a.qkv, a.att, float32(ly.ld.scale))
	o := make([]float32, M*D)
	a.oA = ly.o.forward(o, a.att, M, uint64(li)<<8|2)
	a.xMid = append([]float32(nil), x...)
	cpu.Add(a.xMid, o)
	a.h2 = make([]float32, M*D)
	a.inv2 = normRows(d, a.h2, a.xMid, ly.ln2, ly.ln2b)
	a.gu = make([]float32, M*ly.up.n)
	a.upA = ly.up.forward(a.gu, a.h2, M, uint64(li)<<8|3)
	a.act = make([]float32, M*d.I)
	if d.act == actSwiGLU {
		cpu.SwiGLU(a.act, a.gu, d.I)
	} else { // GELU in place, on a copy: the backward pass needs its input
		copy(a.act, a.gu)
		activate(d.act, nil, a.act, d.I)
	}
	dn := make([]float32, M*D)
	a.dnA = ly.dn.forward(dn, a.act, M, uint64(li)<<8|4)
	next := append([]float32(nil), a.xMid...)
	cpu.Add(next, dn)
	return a, next
}

// attend is packedLM.attend over the pass's own keys (each sequence's rows), keeping the weights.
func (p *cpuPass) attend(qkv, att []float32, scale float32) ([]float32, []int) {
	d := p.w.d
	qd, kvd := d.H*d.hd, d.Hkv*d.hd
	stride := qd + 2*kvd
	off := make([]int, len(p.rows)+1)
	for r, ri := range p.rows {
		off[r+1] = off[r] + d.H*(ri.pos+1-windowStart(ri.pos, d.window))
	}
	probs := make([]float32, off[len(p.rows)])
	group := d.H / d.Hkv
	cpu.Parallel(len(p.rows), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			ri := p.rows[r]
			first, base := windowStart(ri.pos, d.window), p.start[ri.seq]
			n := ri.pos + 1 - first
			for hh := 0; hh < d.H; hh++ {
				kh := hh / group
				attendHead(qkv[r*stride+hh*d.hd:r*stride+(hh+1)*d.hd], qkv[base*stride+qd+kh*d.hd:], qkv[base*stride+qd+kvd+kh*d.hd:], stride,
					first, ri.pos, scale, probs[off[r]+hh*n:off[r]+(hh+1)*n], att[r*qd+hh*d.hd:r*qd+(hh+1)*d.hd])
			}
		}
	})
	return probs, off
}

// normBackward adds to dx the gradient through the description's norm of x (inv: RMSNorm's
// saved 1/rms per row), and to dw and db when they are not nil.
func normBackward(d *desc, dx, dy, x, w, inv []float32, dw, db []float32) {
	if d.norm == layerNormKind {
		layerNormBackward(dx, dy, x, w, d.D, d.eps, dw, db)
		return
	}
	rmsBackward(dx, dy, x, w, inv, d.D, dw)
}

// layerNormBackward adds to dx the gradient through y = (x − mean)/σ·w + b, row by row, and
// to dw and db (if not nil).
func layerNormBackward(dx, dy, x, w []float32, d int, eps float64, dw, db []float32) {
	for r := 0; r+d <= len(x); r += d {
		xr, dyr, dxr := x[r:r+d], dy[r:r+d], dx[r:r+d]
		mean, inv := cpu.MeanInvStd(xr, eps)
		var sg, sgx float64 // mean of g = dy·w and of g·x̂
		for i, v := range dyr {
			xh := (float64(xr[i]) - mean) * inv
			g := float64(v * w[i])
			sg += g
			sgx += g * xh
			if dw != nil {
				dw[i] += v * float32(xh)
			}
			if db != nil {
				db[i] += v
			}
		}
		sg /= float64(d)
		sgx /= float64(d)
		for i, v := range dyr {
			xh := (float64(xr[i]) - mean) * inv
			dxr[i] += float32(inv * (float64(v*w[i]) - sg - xh*sgx))
		}
	}
}

// activationBackward returns the gradient of the up projection's output given that of the
// activation's: through silu(gate)·up for SwiGLU (rows [gate | up] of 2n), through GELU else.
func activationBackward(kind actKind, gu, dAct []float32, n int) []float32 {
	switch kind {
	case actGELUTanh:
		const c = 0.7978845608028654 // sqrt(2/π)
		out := make([]float32, len(gu))
		for i, v := range gu {
			x := float64(v)
			t := math.Tanh(c * (x + 0.044715*x*x*x))
			out[i] = dAct[i] * float32(0.5*(1+t)+0.5*x*(1-t*t)*c*(1+3*0.044715*x*x))
		}
		return out
	case actGELUErf:
		out := make([]float32, len(gu))
		for i, v := range gu {
			x := float64(v)
			out[i] = dAct[i] * float32(0.5*(1+math.Erf(x/math.Sqrt2))+x*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi))
		}
		return out
	}
	dgu := make([]float32, len(gu))
	for r := 0; (r+1)*2*n <= len(gu); r++ {
		gate, up := gu[r*2*n:r*2*n+n], gu[r*2*n+n:(r+1)*2*n]
		dg, du, da := dgu[r*2*n:r*2*n+n], dgu[r*2*n+n:(r+1)*2*n], dAct[r*n:(r+1)*n]
		for i, gv := range gate {
			sg := float32(1 / (1 + math.Exp(float64(-gv))))
			du[i] = da[i] * gv * sg
			dg[i] = da[i] * up[i] * sg * (1 + gv*(1-sg))
		}
	}
	return dgu
}

// Backward accumulates into g the gradient of L given dL/d(out[s][t]). It turns the logits
// into their gradient where they are (a vocabulary-sized buffer less), so it runs once a pass.
func (p *cpuPass) Backward(dOut [][]float32, g *Grads) error {
	w := p.w
	d := w.d
	M, D, N := len(p.rows), d.D, w.head.n
	qd, kvd := d.H*d.hd, d.Hkv*d.hd
	if p.done {
		return fmt.Errorf("a training pass runs backward once")
	}
	p.done = true
	dh := make([]float32, M*D)
	per := headRows(M, N)
	var buf []float32
	for r0 := 0; r0 < M; r0 += per {
		n := min(per, M-r0)
		dlogits, acts := p.logits, p.headA
		if dlogits == nil {
			if buf == nil {
				buf = make([]float32, per*N)
			}
			dlogits = buf[:n*N]
			acts = w.head.forward(dlogits, p.hF[r0*D:(r0+n)*D], n, 0)
		}
		cpu.Parallel(n, func(lo, hi int) {
			for r := r0 + lo; r < r0+hi; r++ {
				ri := p.rows[r]
				dl := dlogits[(r-r0)*N : (r-r0+1)*N]
				gv := float32(0)
				if ri.pos < len(dOut[ri.seq]) {
					gv = dOut[ri.seq][ri.pos]
				}
				switch {
				case gv == 0:
					clear(dl)
				case d.labels > 0:
					clear(dl)
					dl[0] = gv
				default:
					// d log softmax(z)[k] / dz = onehot(k) − softmax(z), written over z
					lse := cpu.LogSumExp(dl)
					for i, v := range dl {
						dl[i] = -gv * float32(math.Exp(float64(v)-lse))
					}
					dl[p.seqs[ri.seq][ri.pos+1]] += gv
				}
			}
		})
		// A tied head's block is named as the embedding, so its gradient joins the embedding's.
		w.head.backward(dh[r0*D:(r0+n)*D], dlogits, n, acts, g)
	}
	p.logits = nil
	dx := make([]float32, M*D)
	normBackward(d, dx, dh, p.xOut, w.norm, p.invF, g.Base[d.final.w], g.Base[d.final.b])
	half := d.hd / 2
	for li := len(w.layers) - 1; li >= 0; li-- {
		ly, a := &w.layers[li], &p.layers[li]
		if p.recompute {
			full, _ := p.layerForward(li, a.x)
			a = &full
		}
		ld := ly.ld
		// MLP: x = xMid + down(act(up(norm(xMid))))
		dAct := make([]float32, M*d.I)
		ly.dn.backward(dAct, dx, M, a.dnA, g)
		dgu := activationBackward(d.act, a.gu, dAct, d.I)
		dh2 := make([]float32, M*D)
		ly.up.backward(dh2, dgu, M, a.upA, g)
		dxMid := append([]float32(nil), dx...)
		normBackward(d, dxMid, dh2, a.xMid, ly.ln2, a.inv2, g.Base[ld.ln2.w], g.Base[ld.ln2.b])
		// Attention: xMid = x + o(att)
		dAtt := make([]float32, M*qd)
		ly.o.backward(dAtt, dxMid, M, a.oA, g)
		dqkv := p.attendBackward(a, dAtt, float32(ld.scale))
		for r := 0; p.cos != nil && r < M; r++ {
			row := dqkv[r*ly.qkv.n:]
			for hh := 0; hh < d.H+d.Hkv; hh++ { // the inverse rotation
				x := row[hh*d.hd : (hh+1)*d.hd]
				cs, sn := p.cos[r*half:(r+1)*half], p.sin[r*half:(r+1)*half]
				for i := 0; i < half; i++ {
					a1, b1 := x[i], x[i+half]
					x[i] = a1*cs[i] + b1*sn[i]
					x[i+half] = b1*cs[i] - a1*sn[i]
				}
			}
		}
		if ly.qn != nil { // through the per-head norms of q and k
			heads := d.H + d.Hkv
			for r := range p.rows {
				row := dqkv[r*ly.qkv.n:]
				pre := a.qkPre[r*(qd+kvd) : (r+1)*(qd+kvd)]
				inv := a.qkInv[r*heads : (r+1)*heads]
				dpre := make([]float32, qd+kvd)
				rmsBackward(dpre[:qd], row[:qd], pre[:qd], ly.qn, inv[:d.H], d.hd, g.Base[ld.qNorm])
				rmsBackward(dpre[qd:], row[qd:qd+kvd], pre[qd:], ly.kn, inv[d.H:], d.hd, g.Base[ld.kNorm])
				copy(row, dpre)
			}
		}
		dh1 := make([]float32, M*D)
		ly.qkv.backward(dh1, dqkv, M, a.qkvA, g)
		dx = dxMid
		normBackward(d, dx, dh1, a.x, ly.ln1, a.inv1, g.Base[ld.ln1.w], g.Base[ld.ln1.b])
	}
	for _, t := range []struct {
		table []float32
		idx   func(ri rowInfo) int
	}{
		{g.Base[d.embed], func(ri rowInfo) int { return p.seqs[ri.seq][ri.pos] }},
		{g.Base[d.positions], func(ri rowInfo) int { return ri.pos }},
	} {
		if t.table == nil {
			continue
		}
		for r, ri := range p.rows {
			i := t.idx(ri)
			cpu.Add(t.table[i*D:(i+1)*D], dx[r*D:(r+1)*D])
		}
	}
	return nil
}

// attendBackward returns the gradient of q, k and v (post-rotation) [M][qd+2kvd] given that of
// the attention output. Work is split by (sequence, key/value head), whose gradients are
// disjoint.
func (p *cpuPass) attendBackward(a *layerActs, dAtt []float32, scale float32) []float32 {
	w := p.w.d
	qd, kvd := w.H*w.hd, w.Hkv*w.hd
	stride := qd + 2*kvd
	dqkv := make([]float32, len(p.rows)*stride)
	group := w.H / w.Hkv
	units := len(p.seqs) * w.Hkv
	cpu.Parallel(units, func(lo, hi int) {
		var dp []float32
		for u := lo; u < hi; u++ {
			s, kh := u/w.Hkv, u%w.Hkv
			base := p.start[s]
			for t := 0; t < len(p.seqs[s]); t++ {
				r := base + t
				first := windowStart(t, w.window)
				n := t + 1 - first
				dp = slices.Grow(dp[:0], n)[:n]
				for hh := kh * group; hh < (kh+1)*group; hh++ {
					pr := a.probs[a.probOff[r]+hh*n : a.probOff[r]+(hh+1)*n]
					dO := dAtt[r*qd+hh*w.hd : r*qd+(hh+1)*w.hd]
					sum := float32(0)
					for j := range n {
						v := a.qkv[(base+first+j)*stride+qd+kvd+kh*w.hd:][:w.hd]
						dp[j] = cpu.Dot(dO, v)
						sum += pr[j] * dp[j]
						cpu.Axpy(pr[j], dO, dqkv[(base+first+j)*stride+qd+kvd+kh*w.hd:][:w.hd])
					}
					q := a.qkv[r*stride+hh*w.hd:][:w.hd]
					dq := dqkv[r*stride+hh*w.hd:][:w.hd]
					for j := range n {
						ds := pr[j] * (dp[j] - sum) * scale
						k := a.qkv[(base+first+j)*stride+qd+kh*w.hd:][:w.hd]
						cpu.Axpy(ds, k, dq)
						cpu.Axpy(ds, q, dqkv[(base+first+j)*stride+qd+kh*w.hd:][:w.hd])
					}
				}
			}
		}
	})
	return dqkv
}
