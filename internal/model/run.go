package model

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// exec returns the named executable, building it on first use. Callers hold m.mu.
func (m *Model) exec(name string, fn func(ctx *context.Context, in []*Node) []*Node) (*context.Exec, error) {
	if e, ok := m.execs[name]; ok {
		return e, nil
	}
	e, err := context.NewExec(m.Backend, m.Ctx, fn)
	if err != nil {
		return nil, err
	}
	e.SetMaxCache(64)
	m.execs[name] = e
	return e, nil
}

// run executes a named graph under the model lock and turns GoMLX panics into errors.
func (m *Model) run(name string, fn func(ctx *context.Context, in []*Node) []*Node, args ...any) (out []*tensors.Tensor, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.exec(name, fn)
	if err != nil {
		return nil, err
	}
	NoteGraph(&m.graphOwner, name, args...)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %v", name, r)
		}
	}()
	return e.Exec(args...)
}

// stepGraph runs C new tokens through the model with a KV cache: in = tokens [B,C],
// positions [B,C], mask [B,C,Tmax], write [C,Tmax], then 2 caches per layer. It returns the
// logits of the last token [B,V] and the updated caches.
func stepGraph(m *Model) func(ctx *context.Context, in []*Node) []*Node {
	return func(ctx *context.Context, in []*Node) []*Node {
		w := newWeights(m, ctx, in[0].Graph())
		att := &attention{mask: in[2], write: in[3], cache: in[4:]}
		h := m.desc.hidden(w, in[0], in[1], att)
		C := h.Shape().Dimensions[1]
		last := Slice(h, AxisRange(), AxisRange(C-1, C), AxisRange())
		logits := m.desc.headGraph(w, last)
		out := []*Node{Reshape(logits, logits.Shape().Dimensions[0], -1)}
		return append(out, att.out...)
	}
}

// selectGraph is the no-cache decoding step: a full forward pass over a fixed window and the
// logits at the position selected by the one-hot in[3] [T].
func selectGraph(m *Model) func(ctx *context.Context, in []*Node) []*Node {
	return func(ctx *context.Context, in []*Node) []*Node {
		w := newWeights(m, ctx, in[0].Graph())
		h := m.desc.hidden(w, in[0], in[1], &attention{mask: in[2]})
		h = InsertAxes(Einsum("btd,t->bd", h, in[3]), 1)
		logits := m.desc.headGraph(w, h)
		return []*Node{Reshape(logits, logits.Shape().Dimensions[0], -1)}
	}
}

func int32Tensor(rows [][]int32) *tensors.Tensor {
	B, T := len(rows), len(rows[0])
	flat := make([]int32, 0, B*T)
	for _, r := range rows {
		flat = append(flat, r...)
	}
	return tensors.FromFlatDataAndDimensions(flat, B, T)
}

func toFloat32(t *tensors.Tensor) ([]float32, error) {
	if t.DType() != dtypes.Float32 {
		return nil, fmt.Errorf("want float32 output, got %s", t.DType())
	}
	return tensors.CopyFlatData[float32](t)
}

var graphs = struct {
	sync.Mutex
	seen map[string]bool
}{seen: map[string]bool{}}

// GraphOwner names what runs graphs (a model, a trainer) for GraphsBuilt by an id drawn on
// first use, not by its address: a collected owner's address is reused, and the graphs of the
// new owner at it would be taken for ones already built.
type GraphOwner struct{ id atomic.Uint64 }

var graphOwners atomic.Uint64

func (o *GraphOwner) ownerID() uint64 {
	if v := o.id.Load(); v != 0 {
		return v
	}
	o.id.CompareAndSwap(0, graphOwners.Add(1))
	return o.id.Load()
}

// NoteGraph records that owner ran the graph name with args (tensors, or values of fixed
// shape): each new combination of input shapes is one graph built (compiled, on XLA).
func NoteGraph(owner *GraphOwner, name string, args ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%s", owner.ownerID(), name)
	for _, a := range args {
		if t, ok := a.(*tensors.Tensor); ok {
			b.WriteString(" " + t.Shape().String())
		}
	}
	graphs.Lock()
	graphs.seen[b.String()] = true
	graphs.Unlock()
}

// GraphsBuilt counts the graphs this process has built (compiled, on XLA): one per graph
// and combination of input shapes.
func GraphsBuilt() int {
	graphs.Lock()
	defer graphs.Unlock()
	return len(graphs.seen)
}
