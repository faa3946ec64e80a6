package model

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

func randTensor(rng *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, dims...)
}

// TestFastGradientEqualsStock compares the replacement DotGeneral gradient with GoMLX's own on
// every einsum the model and its losses use.
func TestFastGradientEqualsStock(t *testing.T) {
	backend, err := NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		eq       string
		lhs, rhs []int
	}{
		{"bti,oi->bto", []int{2, 5, 6}, []int{7, 6}},                   // Linear
		{"bti,io->bto", []int{2, 5, 6}, []int{6, 7}},                   // GPT-2 Conv1D
		{"bqngd,bknd->bngqk", []int{2, 5, 2, 3, 4}, []int{2, 5, 2, 4}}, // GQA scores
		{"bngqk,bknd->bqngd", []int{2, 2, 3, 5, 5}, []int{2, 5, 2, 4}}, // GQA values
		{"bthd,de->bthe", []int{2, 5, 3, 4}, []int{4, 4}},              // rotate_half
		{"btd,vd->btv", []int{2, 5, 6}, []int{9, 6}},                   // LM head
		{"dshe,s->dhe", []int{6, 3, 2, 4}, []int{3}},                   // c_attn split
		{"btd,dhe->bthe", []int{2, 5, 6}, []int{6, 2, 4}},              // GPT-2 q/k/v
		{"qt,bqnd->btnd", []int{3, 7}, []int{2, 3, 2, 4}},              // cache write
		{"btd,t->bd", []int{2, 5, 6}, []int{5}},                        // position select
		{"er,r->e", []int{4, 9}, []int{9}},                             // loss selections
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		lhs, rhs := randTensor(rng, c.lhs...), randTensor(rng, c.rhs...)
		// Weighted sum of the output, so every output element has a distinct gradient.
		grads := func(vjp VJP) [][]float32 {
			old := VJPRegistration[NodeTypeDotGeneral]
			VJPRegistration[NodeTypeDotGeneral] = vjp
			defer func() { VJPRegistration[NodeTypeDotGeneral] = old }()
			e := MustNewExec(backend, func(a, b *Node) (*Node, *Node) {
				out := Einsum(c.eq, a, b)
				w := Sin(ConvertDType(IotaFull(a.Graph(), out.Shape()), out.DType()))
				g := Gradient(ReduceAllSum(Mul(out, w)), a, b)
				return g[0], g[1]
			})
			res := e.MustExec(lhs, rhs)
			return [][]float32{tensors.MustCopyFlatData[float32](res[0]), tensors.MustCopyFlatData[float32](res[1])}
		}
		stock, fast := grads(stockDotGeneralVJP), grads(fastDotGeneralVJP)
		for k := range stock {
			for i := range stock[k] {
				if d := math.Abs(float64(stock[k][i] - fast[k][i])); d > 1e-5*(1+math.Abs(float64(stock[k][i]))) {
					t.Fatalf("%s operand %d element %d: stock %g, fast %g", c.eq, k, i, stock[k][i], fast[k][i])
				}
			}
		}
	}
}
