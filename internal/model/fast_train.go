package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/cpu"
)

// Training on the engine's own CPU path (LLaMA family: llama, mistral, qwen2): a forward pass
// over whole sequences that keeps its activations, and the backward pass that turns the
// gradient of each token's log-probability (or of a reward head's score) into gradients of the
// trainable tensors, full fine-tuning or LoRA. The arithmetic is that of the graphs in
// llama.go and lora.go; tests check the gradients against GoMLX's and finite differences.

// FastTrainable reports whether training can run on the own CPU path.
func (m *Model) FastTrainable() bool {
	_, ok := m.arch.(llama)
	return m.fastOn && ok
}

// Grads holds gradient buffers keyed by variable: checkpoint tensor names for the base
// weights (scope WeightScope) and adapter names for LoRA (scope LoRAScope).
type Grads struct {
	Base map[string][]float32
	LoRA map[string][]float32
}

// NewGrads allocates zeroed gradients for what trains: the adapters when the model has them,
// else every base tensor.
func (m *Model) NewGrads() *Grads {
	g := &Grads{Base: map[string][]float32{}, LoRA: map[string][]float32{}}
	if m.lora != nil {
		for mod := range m.lora.modules {
			for _, ab := range []string{".lora_A.weight", ".lora_B.weight"} {
				g.LoRA[mod+ab] = make([]float32, m.Ctx.GetVariableByScopeAndName(LoRAScope, mod+ab).Shape().Size())
			}
		}
		return g
	}
	for _, n := range m.names {
		g.Base[n] = make([]float32, m.Variable(n).Shape().Size())
	}
	return g
}

// Dropout configures LoRA dropout for one pass: masks come from Seed alone, so a pass can be
// repeated exactly (a resumed run draws the same masks).
type Dropout struct {
	Rate float64
	Seed uint64
}

// trainLinear is one (possibly fused) linear layer: W [n][in] packed both ways, its
// tensors' names by output block, and the adapters on its blocks.
type trainLinear struct {
	n, in  int
	w, wT  *cpu.Packed
	bias   []float32
	blocks []linBlock
}

type linBlock struct {
	name     string // checkpoint tensor of this block of output rows
	bias     string // its bias tensor, "" if none
	off, out int    // output columns [off, off+out)
	lora     *loraLin
}

type loraLin struct {
	module   string
	r        int
	pa, pb   *cpu.Packed // for u = xd·Aᵀ and u·Bᵀ
	paT, pbT *cpu.Packed // for du·A and dy·B
	scale    float32
	dropout  float64
	dropSeed uint64
}

type trainLayer struct {
	ln1, ln2       []float32
	qkv, o, gu, dn trainLinear
	names          [2]string // the two norm tensors
}

type trainWeights struct {
	configView
	embed  []float32
	layers []trainLayer
	norm   []float32
	head   trainLinear
	labels int // >0: a score head
	inv    []float32
}

func (m *Model) value(scope, name string) []float32 {
	return tensors.MustCopyFlatData[float32](m.Ctx.GetVariableByScopeAndName(scope, name).MustValue())
}

// withValues calls fn with the values of the named tensors, read in place (no copy); they are
// valid only during fn.
func (m *Model) withValues(names []string, fn func(vals [][]float32)) {
	var rec func(acc [][]float32)
	rec = func(acc [][]float32) {
		if len(acc) == len(names) {
			fn(acc)
			return
		}
		tensors.ConstFlatData(m.Variable(names[len(acc)]).MustValue(), func(flat []float32) { rec(append(acc, flat)) })
	}
	rec(nil)
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
func (m *Model) trainWeights(drop Dropout) (*trainWeights, error) {
	if !m.FastTrainable() {
		return nil, fmt.Errorf("engine cpu trains the llama family only, not %s", m.Config.ModelType)
	}
	var key []*tensors.Tensor
	for _, n := range m.names {
		key = append(key, m.Variable(n).MustValue())
	}
	var w *trainWeights
	if c := m.trainCache; m.lora != nil && c != nil && slices.Equal(c.key, key) && c.version == m.baseVersion.Load() {
		w = c.w
	} else {
		w = m.packBase()
		m.trainCache = nil
		if m.lora != nil {
			m.trainCache = &trainCache{key: key, version: m.baseVersion.Load(), w: w}
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
			blk.lora = &loraLin{module: mod, r: r, pa: cpu.Pack(a, r, l.in), pb: cpu.Pack(b, blk.out, r),
				paT: cpu.PackTransposed(a, r, l.in), pbT: cpu.PackTransposed(b, blk.out, r), scale: float32(m.lora.scale),
				dropout: drop.Rate, dropSeed: drop.Seed ^ hashName(mod)}
		}
	}
	return w, nil
}

// linears lists every linear layer of the weights, the head included.
func (w *trainWeights) linears() []*trainLinear {
	var out []*trainLinear
	for i := range w.layers {
		ly := &w.layers[i]
		out = append(out, &ly.qkv, &ly.o, &ly.gu, &ly.dn)
	}
	return append(out, &w.head)
}

// packBase packs the base weights for training.
func (m *Model) packBase() *trainWeights {
	c := m.Config
	w := &trainWeights{configView: configView{D: c.HiddenSize, H: c.NumHeads, Hkv: c.NumKVHeads, hd: c.HeadDim, I: c.IntermediateSize,
		window: c.SlidingWindow, eps: c.NormEps}, labels: c.NumLabels, inv: invFreqs(c)}
	get := func(n string) []float32 { return m.value(WeightScope, n) }
	has := func(n string) bool { return m.Variable(n) != nil }
	linear := func(in int, names ...string) trainLinear {
		var l trainLinear
		var bias []float32
		weights := make([]string, len(names))
		for i, n := range names {
			weights[i] = n + ".weight"
		}
		// The fused layer is packed from its parts where they are stored, both ways round.
		m.withValues(weights, func(vals [][]float32) {
			for i, n := range names {
				out := len(vals[i]) / in
				blk := linBlock{name: weights[i], off: l.n, out: out}
				if has(n + ".bias") {
					blk.bias = n + ".bias"
				}
				l.blocks = append(l.blocks, blk)
				l.n += out
			}
			l.w, l.wT = cpu.PackRows(vals, in), cpu.PackRowsTransposed(vals, in)
		})
		for _, blk := range l.blocks {
			if blk.bias != "" {
				bias = make([]float32, l.n)
				break
			}
		}
		for _, blk := range l.blocks {
			if blk.bias != "" {
				copy(bias[blk.off:], get(blk.bias))
			}
		}
		l.in, l.bias = in, bias
		return l
	}
	D, I := c.HiddenSize, c.IntermediateSize
	w.embed = get("model.embed_tokens.weight")
	for l := 0; l < c.NumLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		w.layers = append(w.layers, trainLayer{
			ln1: get(p + "input_layernorm.weight"), ln2: get(p + "post_attention_layernorm.weight"),
			names: [2]string{p + "input_layernorm.weight", p + "post_attention_layernorm.weight"},
			qkv:   linear(D, p+"self_attn.q_proj", p+"self_attn.k_proj", p+"self_attn.v_proj"),
			o:     linear(c.NumHeads*c.HeadDim, p+"self_attn.o_proj"),
			gu:    linear(D, p+"mlp.gate_proj", p+"mlp.up_proj"),
			dn:    linear(I, p+"mlp.down_proj"),
		})
	}
	w.norm = get("model.norm.weight")
	switch {
	case c.NumLabels > 0:
		w.head = linear(D, "score")
	case has("lm_head.weight"):
		w.head = linear(D, "lm_head")
	default:
		w.head = linear(D, "model.embed_tokens")
	}
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
	cpu.MatMul(y, x, M, l.w)
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
	cpu.MatMulAdd(dx, dy, M, l.wT)
	dyT := cpu.Transpose(dy, M, l.n) // [n][M]: each output block's rows are contiguous
	if len(g.Base) > 0 {
		xT := cpu.PackTransposed(a.x, M, l.in)
		for _, blk := range l.blocks {
			cpu.MatMulAdd(g.Base[blk.name], dyT[blk.off*M:(blk.off+blk.out)*M], blk.out, xT)
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
		cpu.MatMul(du, dyb, M, lo.pbT)
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
			cpu.MatMulAdd(dx, du, M, lo.paT)
			continue
		}
		dxl := make([]float32, M*l.in)
		cpu.MatMul(dxl, du, M, lo.paT)
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
	inv1, inv2                         []float32
	probs                              []float32 // per row and head, the attention weights over its keys
	probOff                            []int     // where row r's weights start
	qkvA, oA, guA, dnA                 linActs
}

// TrainPass is a forward pass over whole sequences that keeps its activations.
type TrainPass struct {
	w        *trainWeights
	seqs     [][]int
	rows     []rowInfo
	start    []int
	cos, sin []float32
	layers   []layerActs
	xOut, hF []float32
	invF     []float32
	headA    linActs
	logits   []float32 // [M][head outputs]
}

// TrainForward runs seqs through the model, keeping activations for Backward. It returns, per
// sequence, log p(s[t+1] | s[:t+1]) for t < len(s)-1 (for a score head: the head's first
// output at each position instead).
func (m *Model) TrainForward(seqs [][]int, drop Dropout) (*TrainPass, [][]float32, error) {
	if err := m.checkSeqs(seqs, 1); err != nil {
		return nil, nil, err
	}
	w, err := m.trainWeights(drop)
	if err != nil {
		return nil, nil, err
	}
	p := &TrainPass{w: w, seqs: seqs}
	for s, seq := range seqs {
		p.start = append(p.start, len(p.rows))
		for i := range seq {
			p.rows = append(p.rows, rowInfo{s, i})
		}
	}
	M, D := len(p.rows), w.D
	qd := w.H * w.hd
	p.cos, p.sin = ropeTables(w.inv, p.rows)
	x := make([]float32, M*D)
	for r, ri := range p.rows {
		copy(x[r*D:(r+1)*D], w.embed[seqs[ri.seq][ri.pos]*D:])
	}
	half := w.hd / 2
	for li := range w.layers {
		ly := &w.layers[li]
		a := layerActs{x: x}
		a.h1 = make([]float32, M*D)
		a.inv1 = cpu.RMSNorm(a.h1, x, ly.ln1, D, w.eps)
		a.qkv = make([]float32, M*ly.qkv.n)
		a.qkvA = ly.qkv.forward(a.qkv, a.h1, M, uint64(li)<<8|1)
		for r := range p.rows {
			rotateHeads(a.qkv[r*ly.qkv.n:], w.H+w.Hkv, w.hd, p.cos[r*half:(r+1)*half], p.sin[r*half:(r+1)*half])
		}
		a.att = make([]float32, M*qd)
		a.probs, a.probOff = p.attend(a.qkv, a.att)
		o := make([]float32, M*D)
		a.oA = ly.o.forward(o, a.att, M, uint64(li)<<8|2)
		a.xMid = append([]float32(nil), x...)
		cpu.Add(a.xMid, o)
		a.h2 = make([]float32, M*D)
		a.inv2 = cpu.RMSNorm(a.h2, a.xMid, ly.ln2, D, w.eps)
		a.gu = make([]float32, M*ly.gu.n)
		a.guA = ly.gu.forward(a.gu, a.h2, M, uint64(li)<<8|3)
		a.act = make([]float32, M*w.I)
		cpu.SwiGLU(a.act, a.gu, w.I)
		dn := make([]float32, M*D)
		a.dnA = ly.dn.forward(dn, a.act, M, uint64(li)<<8|4)
		x = append([]float32(nil), a.xMid...)
		cpu.Add(x, dn)
		p.layers = append(p.layers, a)
	}
	p.xOut = x
	p.hF = make([]float32, M*D)
	p.invF = cpu.RMSNorm(p.hF, x, w.norm, D, w.eps)
	N := w.head.n
	p.logits = make([]float32, M*N)
	p.headA = w.head.forward(p.logits, p.hF, M, 0)
	out := make([][]float32, len(seqs))
	for s, seq := range seqs {
		base := p.start[s]
		if w.labels > 0 {
			out[s] = make([]float32, len(seq))
			for t := range seq {
				out[s][t] = p.logits[(base+t)*N]
			}
			continue
		}
		out[s] = make([]float32, len(seq)-1)
		for t := 0; t+1 < len(seq); t++ {
			out[s][t] = float32(cpu.LogSoftmaxAt(p.logits[(base+t)*N:(base+t+1)*N], seq[t+1]))
		}
	}
	return p, out, nil
}

// attend is fastLM.attend over the pass's own keys (each sequence's rows), keeping the weights.
func (p *TrainPass) attend(qkv, att []float32) ([]float32, []int) {
	w := p.w
	qd, kvd := w.H*w.hd, w.Hkv*w.hd
	stride := qd + 2*kvd
	off := make([]int, len(p.rows)+1)
	for r, ri := range p.rows {
		off[r+1] = off[r] + w.H*(ri.pos+1-windowStart(ri.pos, w.window))
	}
	probs := make([]float32, off[len(p.rows)])
	group := w.H / w.Hkv
	scale := float32(1 / math.Sqrt(float64(w.hd)))
	cpu.Parallel(len(p.rows), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			ri := p.rows[r]
			first, base := windowStart(ri.pos, w.window), p.start[ri.seq]
			n := ri.pos + 1 - first
			for hh := 0; hh < w.H; hh++ {
				kh := hh / group
				attendHead(qkv[r*stride+hh*w.hd:r*stride+(hh+1)*w.hd], qkv[base*stride+qd+kh*w.hd:], qkv[base*stride+qd+kvd+kh*w.hd:], stride,
					first, ri.pos, scale, probs[off[r]+hh*n:off[r]+(hh+1)*n], att[r*qd+hh*w.hd:r*qd+(hh+1)*w.hd])
			}
		}
	})
	return probs, off
}

// Backward accumulates into g the gradient of L given dL/d(out[s][t]) for the outputs
// TrainForward returned (d[s] may be nil: no gradient from that sequence).
func (p *TrainPass) Backward(d [][]float32, g *Grads) {
	w := p.w
	M, D, N := len(p.rows), w.D, w.head.n
	qd := w.H * w.hd
	dlogits := make([]float32, M*N)
	cpu.Parallel(len(p.seqs), func(lo, hi int) {
		for s := lo; s < hi; s++ {
			if d[s] == nil {
				continue
			}
			for t, gv := range d[s] {
				if gv == 0 {
					continue
				}
				row := p.start[s] + t
				dl := dlogits[row*N : (row+1)*N]
				if w.labels > 0 {
					dl[0] += gv
					continue
				}
				// d log softmax(z)[k] / dz = onehot(k) − softmax(z)
				z := p.logits[row*N : (row+1)*N]
				lse := cpu.LogSumExp(z)
				for i, v := range z {
					dl[i] -= gv * float32(math.Exp(float64(v)-lse))
				}
				dl[p.seqs[s][t+1]] += gv
			}
		}
	})
	dh := make([]float32, M*D)
	// A tied head's block is named model.embed_tokens.weight, so its gradient joins the
	// embedding's.
	w.head.backward(dh, dlogits, M, p.headA, g)
	dx := make([]float32, M*D)
	rmsBackward(dx, dh, p.xOut, w.norm, p.invF, D, g.Base["model.norm.weight"])
	half := w.hd / 2
	for li := len(w.layers) - 1; li >= 0; li-- {
		ly, a := &w.layers[li], &p.layers[li]
		// MLP: x = xMid + down(silu(gate)·up)
		dAct := make([]float32, M*w.I)
		ly.dn.backward(dAct, dx, M, a.dnA, g)
		dgu := make([]float32, M*2*w.I)
		for r := 0; r < M; r++ {
			gate, up := a.gu[r*2*w.I:r*2*w.I+w.I], a.gu[r*2*w.I+w.I:(r+1)*2*w.I]
			dg, du, da := dgu[r*2*w.I:r*2*w.I+w.I], dgu[r*2*w.I+w.I:(r+1)*2*w.I], dAct[r*w.I:(r+1)*w.I]
			for i, gv := range gate {
				sg := float32(1 / (1 + math.Exp(float64(-gv))))
				du[i] = da[i] * gv * sg
				dg[i] = da[i] * up[i] * sg * (1 + gv*(1-sg))
			}
		}
		dh2 := make([]float32, M*D)
		ly.gu.backward(dh2, dgu, M, a.guA, g)
		dxMid := append([]float32(nil), dx...)
		rmsBackward(dxMid, dh2, a.xMid, ly.ln2, a.inv2, D, g.Base[ly.names[1]])
		// Attention: xMid = x + o(att)
		dAtt := make([]float32, M*qd)
		ly.o.backward(dAtt, dxMid, M, a.oA, g)
		dqkv := p.attendBackward(a, dAtt)
		for r := range p.rows {
			row := dqkv[r*ly.qkv.n:]
			for hh := 0; hh < w.H+w.Hkv; hh++ { // the inverse rotation
				x := row[hh*w.hd : (hh+1)*w.hd]
				cs, sn := p.cos[r*half:(r+1)*half], p.sin[r*half:(r+1)*half]
				for i := 0; i < half; i++ {
					a1, b1 := x[i], x[i+half]
					x[i] = a1*cs[i] + b1*sn[i]
					x[i+half] = b1*cs[i] - a1*sn[i]
				}
			}
		}
		dh1 := make([]float32, M*D)
		ly.qkv.backward(dh1, dqkv, M, a.qkvA, g)
		dx = dxMid
		rmsBackward(dx, dh1, a.x, ly.ln1, a.inv1, D, g.Base[ly.names[0]])
	}
	if ge := g.Base["model.embed_tokens.weight"]; ge != nil {
		for r, ri := range p.rows {
			cpu.Add(ge[p.seqs[ri.seq][ri.pos]*D:(p.seqs[ri.seq][ri.pos]+1)*D], dx[r*D:(r+1)*D])
		}
	}
}

// attendBackward returns the gradient of q, k and v (post-rotation) [M][qd+2kvd] given that of
// the attention output. Work is split by (sequence, key/value head), whose gradients are
// disjoint.
func (p *TrainPass) attendBackward(a *layerActs, dAtt []float32) []float32 {
	w := p.w
	qd, kvd := w.H*w.hd, w.Hkv*w.hd
	stride := qd + 2*kvd
	dqkv := make([]float32, len(p.rows)*stride)
	group := w.H / w.Hkv
	scale := float32(1 / math.Sqrt(float64(w.hd)))
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
