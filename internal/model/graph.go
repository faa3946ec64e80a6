package model

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
)

// graphEngine computes the model as GoMLX graphs built from the architecture's description:
// the engine of XLA backends (GPUs), and the reference the CPU engine is checked against.
// Weights are read from the model's variables at every execution, so a change of value
// (Model.Update, a loaded adapter) is seen at once.
type graphEngine struct{ m *Model }

func (e *graphEngine) name() string { return "gomlx" }

// hidden builds the final-normed hidden states [B,T,D] of tokens at positions [B,T].
func (d *desc) hidden(w *weights, tokens, positions *Node, att *attention) *Node {
	x := gatherRows(w.get(d.embed), tokens)
	if d.positions != "" {
		x = Add(x, gatherRows(w.get(d.positions), positions))
	}
	dims := tokens.Shape().Dimensions
	B, T := dims[0], dims[1]
	for l, ly := range d.layers {
		h := d.normGraph(w, x, ly.ln1)
		q, k, v := d.qkvGraph(w, h, ly.qkv, B, T)
		if ly.qNorm != "" {
			q, k = rmsNorm(q, w.get(ly.qNorm), d.eps), rmsNorm(k, w.get(ly.kNorm), d.eps)
		}
		if d.rope != nil {
			q, k = rope(q, positions, d.rope), rope(k, positions, d.rope)
		}
		a := att.attend(l, q, k, v, ly.scale)
		x = Add(x, w.proj(a, ly.o))
		h = d.normGraph(w, x, ly.ln2)
		var act *Node
		switch d.act {
		case actSwiGLU:
			gate := w.proj(h, ly.up[0])
			act = Mul(Mul(gate, Sigmoid(gate)), w.proj(h, ly.up[1]))
		case actGELUTanh:
			act = geluTanh(w.proj(h, ly.up[0]))
		case actGELUErf:
			act = geluErf(w.proj(h, ly.up[0]))
		}
		x = Add(x, w.proj(act, ly.down))
	}
	return d.normGraph(w, x, d.final)
}

func (d *desc) normGraph(w *weights, x *Node, n normW) *Node {
	if d.norm == layerNormKind {
		return layerNorm(x, w.get(n.w), w.get(n.b), d.eps)
	}
	return rmsNorm(x, w.get(n.w), d.eps)
}

// qkvGraph returns q [B,T,H,hd] and k, v [B,T,Hkv,hd]. A fused projection (GPT-2's c_attn,
// where H = Hkv) is split along its outputs by one-hot contractions: simplego has no gradient
// for Slice.
func (d *desc) qkvGraph(w *weights, h *Node, ps []proj, B, T int) (q, k, v *Node) {
	if len(ps) == 3 {
		return Reshape(w.proj(h, ps[0]), B, T, d.H, d.hd), Reshape(w.proj(h, ps[1]), B, T, d.Hkv, d.hd), Reshape(w.proj(h, ps[2]), B, T, d.Hkv, d.hd)
	}
	y := Reshape(w.proj(h, ps[0]), B, T, 3, d.H, d.hd)
	part := func(i int) *Node { return Einsum("btshe,s->bthe", y, oneHot(h.Graph(), 3, i)) }
	return part(0), part(1), part(2)
}

// headGraph maps hidden states to logits [B,T,V] (or a reward head's labels).
func (d *desc) headGraph(w *weights, h *Node) *Node {
	return Einsum("btd,vd->btv", h, w.get(d.head.weight))
}

// proj applies a projection: a linear layer (with its adapter, if any) or a Conv1D.
func (w *weights) proj(x *Node, p proj) *Node {
	if !p.conv {
		return w.linear(x, p.weight[:len(p.weight)-len(".weight")])
	}
	y := Einsum("bti,io->bto", x, w.get(p.weight))
	return Add(y, ExpandLeftToRank(w.get(p.bias), y.Rank()))
}

// forward builds the logits graph [B,T,V] for tokens and positions [B,T] (int32) and a
// boolean attention mask [B,T,T].
func (m *Model) forward(ctx *mlctx.Context, tokens, positions, mask *Node) *Node {
	w := newWeights(m, ctx, tokens.Graph())
	return m.desc.headGraph(w, m.desc.hidden(w, tokens, positions, &attention{mask: mask}))
}

func (e *graphEngine) logProbs(ctx context.Context, seqs [][]int) ([][]float32, error) {
	m := e.m
	out := make([][]float32, len(seqs))
	err := m.eachBatch(ctx, seqs, 2, func(group []int, rows [][]int, T int) error {
		flat, err := m.batchOutput("logprobs", func(ctx *mlctx.Context, in []*Node) *Node {
			return tokenLogProbs(m.forward(ctx, in[0], in[1], in[2]), in[3])
		}, rows, T, targets(rows, T))
		if err != nil {
			return err
		}
		for b, j := range group {
			out[j] = append([]float32(nil), flat[b*T:b*T+len(rows[b])-1]...)
		}
		return nil
	})
	return out, err
}

// batchOutput runs the named graph on one batch right-padded to width T (its inputs: tokens,
// positions and mask, then extra) and returns its float32 output.
func (m *Model) batchOutput(name string, graph func(ctx *mlctx.Context, in []*Node) *Node, rows [][]int, T int, extra ...any) ([]float32, error) {
	tok, pos, mask := m.RightPadded(rows, T)
	res, err := m.run(name, func(ctx *mlctx.Context, in []*Node) []*Node { return []*Node{graph(ctx, in)} },
		append([]any{tok, pos, mask}, extra...)...)
	if err != nil {
		return nil, err
	}
	return toFloat32(res[0])
}

// targets is each row's next token at every position [B,T] (0 past its end).
func targets(rows [][]int, T int) *tensors.Tensor {
	tgt := make([]int32, len(rows)*T)
	for b, s := range rows {
		for t := 0; t+1 < len(s); t++ {
			tgt[b*T+t] = int32(s[t+1])
		}
	}
	return tensors.FromFlatDataAndDimensions(tgt, len(rows), T)
}

func (e *graphEngine) logits(ctx context.Context, seqs [][]int) ([][][]float32, error) {
	m := e.m
	out := make([][][]float32, len(seqs))
	V := m.desc.head.out
	err := m.eachBatch(ctx, seqs, 1, func(group []int, rows [][]int, T int) error {
		flat, err := m.batchOutput("logits", func(ctx *mlctx.Context, in []*Node) *Node {
			return m.forward(ctx, in[0], in[1], in[2])
		}, rows, T)
		if err != nil {
			return err
		}
		for b, j := range group {
			out[j] = make([][]float32, len(rows[b]))
			for t := range rows[b] {
				out[j][t] = flat[(b*T+t)*V : (b*T+t+1)*V]
			}
		}
		return nil
	})
	return out, err
}

func (e *graphEngine) decoder(prompts [][]int, budgets []int, useCache bool) (Decoder, error) {
	m := e.m
	l := newLayout(m, prompts, budgets)
	if !useCache {
		return &recompute{layout: l}, nil
	}
	d := &cached{layout: l}
	for i := 0; i < 2*len(m.desc.layers); i++ {
		d.caches = append(d.caches, tensors.FromShape(shapes.Make(dtypes.Float32, l.rows, l.tmax, m.desc.Hkv, m.desc.hd)))
	}
	return d, nil
}

// graphPass is a training forward pass on the graphs: its inputs, kept so that the backward
// graph recomputes the forward pass (graphs keep no activations between executions).
type graphPass struct {
	e    *graphEngine
	seqs [][]int
	T    int
	args []any // tokens, positions, mask, targets, and the dropout state when dropout is on
}

// trainOutputs builds the per-token outputs trainForward returns: the log-probabilities of
// the targets, or a score head's first output.
func (e *graphEngine) trainOutputs(ctx *mlctx.Context, in []*Node, dropout bool) *Node {
	if dropout {
		ctx.SetGraphParam(in[0].Graph(), DropoutRNGParam, in[4])
	}
	logits := e.m.forward(ctx, in[0], in[1], in[2])
	if e.m.desc.labels > 0 {
		return Einsum("btl,l->bt", logits, oneHot(logits.Graph(), e.m.desc.labels, 0))
	}
	return tokenLogProbs(logits, in[3])
}

func (e *graphEngine) trainForward(seqs [][]int, drop Dropout) (TrainPass, [][]float32, error) {
	m := e.m
	if err := m.checkSeqs(seqs, 1); err != nil {
		return nil, nil, err
	}
	T := 0
	for _, s := range seqs {
		T = max(T, len(s))
	}
	T = m.Bucket(T)
	tok, pos, mask := m.RightPadded(seqs, T)
	p := &graphPass{e: e, seqs: seqs, T: T, args: []any{tok, pos, mask, targets(seqs, T)}}
	dropout := drop.Rate > 0 && m.lora != nil
	if dropout {
		rng, err := RNGStateFromSeed(int64(rand.New(rand.NewPCG(drop.Seed, 0)).Uint64() >> 1))
		if err != nil {
			return nil, nil, err
		}
		p.args = append(p.args, rng)
	}
	res, err := m.run(fmt.Sprintf("trainforward%v", dropout), func(ctx *mlctx.Context, in []*Node) []*Node {
		return []*Node{e.trainOutputs(ctx, in, dropout)}
	}, p.args...)
	if err != nil {
		return nil, nil, err
	}
	flat, err := toFloat32(res[0])
	if err != nil {
		return nil, nil, err
	}
	out := make([][]float32, len(seqs))
	for b, s := range seqs {
		n := len(s) - 1
		if m.desc.labels > 0 {
			n = len(s)
		}
		out[b] = append([]float32(nil), flat[b*T:b*T+n]...)
	}
	return p, out, nil
}

// Backward runs the gradient graph of Σ d·outputs with respect to the trainable variables.
func (p *graphPass) Backward(d [][]float32, g *Grads) error {
	m := p.e.m
	dt := make([]float32, len(p.seqs)*p.T)
	for b, ds := range d {
		copy(dt[b*p.T:], ds)
	}
	params := m.Trainable()
	dropout := len(p.args) == 5
	installGradient()
	res, err := m.run(fmt.Sprintf("trainbackward%v", dropout), func(ctx *mlctx.Context, in []*Node) []*Node {
		outs := p.e.trainOutputs(ctx, in[:len(in)-1], dropout)
		total := ReduceAllSum(Mul(outs, in[len(in)-1]))
		nodes := make([]*Node, len(params))
		for i, v := range params {
			nodes[i] = v.ValueGraph(total.Graph())
		}
		return Gradient(total, nodes...)
	}, append(append([]any(nil), p.args...), tensors.FromFlatDataAndDimensions(dt, len(p.seqs), p.T))...)
	if err != nil {
		return err
	}
	for i, v := range params {
		buf := g.Of(v)
		err := tensors.ConstFlatData(res[i], func(grad []float32) {
			for j, x := range grad {
				buf[j] += x
			}
		})
		res[i].FinalizeAll()
		if err != nil {
			return fmt.Errorf("gradient of %s: %w", v.Name(), err)
		}
	}
	return nil
}

// tokenLogProbs returns log p(targets[b,t]) under logits [B,T,V] -> [B,T].
func tokenLogProbs(logits, targets *Node) *Node {
	g := logits.Graph()
	dims := logits.Shape().Dimensions
	B, T := dims[0], dims[1]
	logp := LogSoftmax(logits, -1)
	bi := Iota(g, shapes.Make(dtypes.Int32, B, T, 1), 0)
	ti := Iota(g, shapes.Make(dtypes.Int32, B, T, 1), 1)
	idx := Concatenate([]*Node{bi, ti, InsertAxes(ConvertDType(targets, dtypes.Int32), -1)}, -1)
	return Gather(logp, idx)
}
