package model

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// GoMLX v0.26's DotGeneral gradient materialises the broadcast product [batch, M, N, K] before
// reducing it: 12x slower, 11x more memory (docs/ENGINE-NOTES.md, The gradient of DotGeneral).
// fastDotGeneralVJP writes each operand's gradient as one DotGeneral of the output gradient with the other operand, followed by
// a transpose into the operand's axis order.

var stockDotGeneralVJP = VJPRegistration[NodeTypeDotGeneral]

var (
	gradMu    sync.Mutex
	wantStock bool // SetFastGradients(false): GoMLX's own gradient, for comparison
	installed int  // 0: GoMLX's registry untouched; 1: the fast gradient; 2: the stock one
)

// SetFastGradients chooses the DotGeneral gradient of training graphs built from now on: the
// replacement (true, the default) or GoMLX's stock one (false, for comparison).
func SetFastGradients(on bool) {
	gradMu.Lock()
	wantStock = !on
	gradMu.Unlock()
	installGradient()
}

// installGradient puts the chosen DotGeneral gradient in GoMLX's registry. The graph engine calls
// it where it builds its graphs; importing the package changes nothing of GoMLX's.
func installGradient() {
	gradMu.Lock()
	defer gradMu.Unlock()
	want := 1
	if wantStock {
		want = 2
	}
	if installed == want {
		return
	}
	if want == 1 {
		VJPRegistration[NodeTypeDotGeneral] = fastDotGeneralVJP
	} else {
		VJPRegistration[NodeTypeDotGeneral] = stockDotGeneralVJP
	}
	installed = want
}

// axesRe finds each axes list in a DotGeneral node's description.
var axesRe = func() map[string]*regexp.Regexp {
	out := map[string]*regexp.Regexp{}
	for _, n := range []string{"lhsContractingAxes", "lhsBatchAxes", "rhsContractingAxes", "rhsBatchAxes"} {
		out[n] = regexp.MustCompile(n + `=\[([0-9 ]*)\]`)
	}
	return out
}()

// dotAxes reads the axes of a DotGeneral node from its public description, e.g.
// "DotGeneral(lhs=[#3], lhsContractingAxes=[2], lhsBatchAxes=[0], rhs=[#4], ...)": GoMLX keeps
// them unexported, and nothing of its internals is read.
func dotAxes(node *Node) (lc, lb, rc, rb []int) {
	desc := node.String()
	get := func(name string) []int {
		m := axesRe[name].FindStringSubmatch(desc)
		if m == nil {
			panic(fmt.Sprintf("DotGeneral gradient: no %s in %q", name, desc))
		}
		var out []int
		for _, f := range strings.Fields(m[1]) {
			v, err := strconv.Atoi(f)
			if err != nil {
				panic(fmt.Sprintf("DotGeneral gradient: %s in %q", name, desc))
			}
			out = append(out, v)
		}
		return out
	}
	return get("lhsContractingAxes"), get("lhsBatchAxes"), get("rhsContractingAxes"), get("rhsBatchAxes")
}

// freeAxes lists the axes of a rank-r operand that are neither contracted nor batch axes, in order.
func freeAxes(r int, contracting, batch []int) []int {
	var out []int
	for a := 0; a < r; a++ {
		if !slices.Contains(contracting, a) && !slices.Contains(batch, a) {
			out = append(out, a)
		}
	}
	return out
}

func span(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// operandGrad is the gradient of one operand ("self") of out = DotGeneral(...). v has the
// output layout [batch, lhsFree, rhsFree]; vOther are the positions of the other operand's free
// axes in v. The product's layout is [batch, selfFree, other's contracting axes in ascending
// order]; it is transposed back to self's axis order.
func operandGrad(v *Node, vBatch, vOther []int, other *Node, oFree, oBatch, oContract []int,
	selfRank int, sBatch, sFree, sContract []int) *Node {
	r := DotGeneral(v, vOther, vBatch, other, oFree, oBatch)
	ascending := slices.Sorted(slices.Values(oContract))
	perm := make([]int, selfRank)
	for i, a := range sBatch {
		perm[a] = i
	}
	for i, a := range sFree {
		perm[a] = len(sBatch) + i
	}
	for i, a := range sContract {
		perm[a] = len(sBatch) + len(sFree) + slices.Index(ascending, oContract[i])
	}
	if slices.Equal(perm, span(0, selfRank)) {
		return r
	}
	return TransposeAllAxes(r, perm...)
}

func fastDotGeneralVJP(node *Node, vjpOutputs []*Node, _ shapes.Shape) []*Node {
	v := vjpOutputs[0]
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	lc, lb, rc, rb := dotAxes(node)
	lf, rf := freeAxes(lhs.Rank(), lc, lb), freeAxes(rhs.Rank(), rc, rb)
	vb := span(0, len(lb))
	vlf := span(len(lb), len(lf))
	vrf := span(len(lb)+len(lf), len(rf))
	gl := operandGrad(v, vb, vrf, rhs, rf, rb, rc, lhs.Rank(), lb, lf, lc)
	gr := operandGrad(v, vb, vlf, lhs, lf, lb, lc, rhs.Rank(), rb, rf, rc)
	return []*Node{gl, gr}
}
