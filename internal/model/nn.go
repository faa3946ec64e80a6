package model

import (
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
)

// Graph building blocks shared by the architectures. Norms divide by Sqrt because GoMLX has no
// gradient for Rsqrt. None of them slices a tensor that needs
// a gradient: simplego has no Pad, which Slice's gradient uses, so selections are written as
// contractions with constant one-hot or sign matrices instead.

func rmsNorm(x, w *Node, eps float64) *Node {
	v := ReduceAndKeep(Square(x), ReduceMean, -1)
	return Mul(Div(x, Sqrt(AddScalar(v, eps))), ExpandLeftToRank(w, x.Rank()))
}

func layerNorm(x, w, b *Node, eps float64) *Node {
	mean := ReduceAndKeep(x, ReduceMean, -1)
	xc := Sub(x, mean)
	v := ReduceAndKeep(Square(xc), ReduceMean, -1)
	return Add(Mul(Div(xc, Sqrt(AddScalar(v, eps))), ExpandLeftToRank(w, x.Rank())), ExpandLeftToRank(b, x.Rank()))
}

func geluTanh(x *Node) *Node {
	inner := MulScalar(Add(x, MulScalar(Mul(Square(x), x), 0.044715)), math.Sqrt(2/math.Pi))
	return Mul(MulScalar(x, 0.5), OnePlus(Tanh(inner)))
}

func geluErf(x *Node) *Node {
	return Mul(MulScalar(x, 0.5), OnePlus(Erf(MulScalar(x, 1/math.Sqrt2))))
}

// rope applies rotary embeddings in HF's rotate_half layout to x [B,T,H,hd] at positions
// [B,T] (int32). invFreq has hd/2 entries.
func rope(x, positions *Node, invFreq []float32) *Node {
	g := x.Graph()
	hd := x.Shape().Dimensions[3]
	half := hd / 2
	freq := make([]float32, hd)
	copy(freq, invFreq)
	copy(freq[half:], invFreq)
	pos := ConvertDType(positions, dtypes.Float32)                     // [B,T]
	ang := Mul(InsertAxes(pos, -1), Reshape(Const(g, freq), 1, 1, hd)) // [B,T,hd]
	cos, sin := InsertAxes(Cos(ang), 2), InsertAxes(Sin(ang), 2)       // [B,T,1,hd]
	rot := make([]float32, hd*hd)                                      // rotate_half(x) = x @ rot: out[i] = -x[i+half] (i<half), x[i-half]
	for i := 0; i < half; i++ {
		rot[(i+half)*hd+i] = -1
		rot[i*hd+i+half] = 1
	}
	rotated := Einsum("bthd,de->bthe", x, Reshape(Const(g, rot), hd, hd))
	return Add(Mul(x, cos), Mul(rotated, sin))
}

// oneHot is the one-hot vector e_i of size n; a contraction with it selects along an axis
// without Slice.
func oneHot(g *Graph, n, i int) *Node {
	v := make([]float32, n)
	v[i] = 1
	return Const(g, v)
}

// attention is the per-call attention state: the mask, and for cached decoding the per-layer
// key/value caches and where the new keys go.
type attention struct {
	mask  *Node   // [B,Tq,Tk] bool
	cache []*Node // 2 per layer, [B,Tmax,Hkv,hd]; nil without a cache
	write *Node   // [Tq,Tmax] float32 one-hot of the cache slot of each query
	out   []*Node // updated caches, in the same order as cache
}

// attend computes softmax(q k^T * scale) v with grouped-query heads. q [B,Tq,H,hd],
// k and v [B,Tq,Hkv,hd]; returns [B,Tq,H*hd].
func (a *attention) attend(layer int, q, k, v *Node, scale float64) *Node {
	if a.cache != nil {
		kc, vc := a.cache[2*layer], a.cache[2*layer+1]
		keep := OneMinus(Reshape(ReduceSum(a.write, 0), 1, -1, 1, 1))
		k = Add(Mul(kc, keep), Einsum("qt,bqnd->btnd", a.write, k))
		v = Add(Mul(vc, keep), Einsum("qt,bqnd->btnd", a.write, v))
		a.out = append(a.out, k, v)
	}
	dims := q.Shape().Dimensions
	B, Tq, H, hd := dims[0], dims[1], dims[2], dims[3]
	Hkv := k.Shape().Dimensions[2]
	Tk := k.Shape().Dimensions[1]
	qg := Reshape(q, B, Tq, Hkv, H/Hkv, hd)
	logits := MulScalar(Einsum("bqngd,bknd->bngqk", qg, k), scale) // [B,Hkv,G,Tq,Tk]
	mask := BroadcastToDims(Reshape(a.mask, B, 1, 1, Tq, Tk), logits.Shape().Dimensions...)
	att := MaskedSoftmax(logits, mask, -1)
	out := Einsum("bngqk,bknd->bqngd", att, v)
	return Reshape(out, B, Tq, H*hd)
}

// gatherRows picks table rows [N,D] at int32 indices [B,T] -> [B,T,D].
func gatherRows(table, idx *Node) *Node {
	return Gather(table, InsertAxes(idx, -1))
}
