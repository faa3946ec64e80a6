package model

import (
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// Decoder feeds tokens one step at a time to a batch of rows and returns next-token logits.
type Decoder interface {
	// Start returns the logits [rows][V] after each row's prompt.
	Start() ([][]float32, error)
	// Step appends one token per row and returns the next logits. A negative token marks a
	// finished row: a decoder may skip its work and return anything for it.
	Step(tokens []int) ([][]float32, error)
}

// layout is a left-padded batch: row r's prompt ends at slot Tp-1 and its real tokens start
// at pad[r], so all rows write the same cache slot at each step.
type layout struct {
	m      *Model
	rows   int
	tp     int
	tmax   int
	pad    []int
	prompt [][]int
	slot   int // next slot to fill
}

// newLayout lays prompts out left-padded; NewRowDecoder has checked them. Positions are per
// row, and a finished row's positions are clamped.
func newLayout(m *Model, prompts [][]int, budgets []int) *layout {
	tp, maxNew := 0, 0
	for i, p := range prompts {
		tp, maxNew = max(tp, len(p)), max(maxNew, budgets[i])
	}
	tp = m.shapeLen(tp, 1)
	l := &layout{m: m, rows: len(prompts), tp: tp, tmax: m.shapeLen(tp+maxNew, 1), prompt: prompts}
	for _, p := range prompts {
		l.pad = append(l.pad, tp-len(p))
	}
	return l
}

// inputs builds tokens/positions [rows,C] and mask [rows,C,Tk] for queries at slots
// [from, from+C) whose token ids are given by tok(r, slot).
func (l *layout) inputs(from, C, Tk int, tok func(r, slot int) int) (*tensors.Tensor, *tensors.Tensor, *tensors.Tensor) {
	ids := make([]int32, l.rows*C)
	pos := make([]int32, l.rows*C)
	mask := make([]bool, l.rows*C*Tk)
	for r := 0; r < l.rows; r++ {
		for c := 0; c < C; c++ {
			s := from + c
			ids[r*C+c] = int32(tok(r, s))
			pos[r*C+c] = int32(min(max(0, s-l.pad[r]), l.m.Config.MaxPositions-1))
			for k := 0; k < Tk; k++ {
				mask[(r*C+c)*Tk+k] = l.m.allowed(s, k, l.pad[r])
			}
		}
	}
	return tensors.FromFlatDataAndDimensions(ids, l.rows, C), tensors.FromFlatDataAndDimensions(pos, l.rows, C),
		tensors.FromFlatDataAndDimensions(mask, l.rows, C, Tk)
}

func (l *layout) promptToken(r, s int) int {
	if s < l.pad[r] {
		return 0
	}
	return l.prompt[r][s-l.pad[r]]
}

func splitRows(flat []float32, rows int) [][]float32 {
	V := len(flat) / rows
	out := make([][]float32, rows)
	for r := range out {
		out[r] = flat[r*V : (r+1)*V]
	}
	return out
}

// cached decodes with a key/value cache of Tmax slots per layer.
type cached struct {
	*layout
	caches []*tensors.Tensor
}

// NewDecoder prepares decoding of up to maxNew tokens after each prompt. With useCache false
// every step recomputes the whole window (the baseline the KV cache is measured against).
func (m *Model) NewDecoder(prompts [][]int, maxNew int, useCache bool) (Decoder, error) {
	budgets := make([]int, len(prompts))
	for i := range budgets {
		budgets[i] = maxNew
	}
	return m.NewRowDecoder(prompts, budgets, useCache)
}

// NewRowDecoder is NewDecoder with a budget of new tokens per row: each row must fit the
// model's positions with its own budget. Rows that are done may be fed any token.
func (m *Model) NewRowDecoder(prompts [][]int, budgets []int, useCache bool) (Decoder, error) {
	if err := m.CheckLanguageModel(); err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		return nil, fmt.Errorf("no prompts")
	}
	if len(budgets) != len(prompts) {
		return nil, fmt.Errorf("%d prompts but %d token budgets", len(prompts), len(budgets))
	}
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("prompt %d is empty", i)
		}
		if len(p)+budgets[i] > m.Config.MaxPositions {
			return nil, fmt.Errorf("prompt %d: %d tokens + %d new exceed the model's %d positions", i, len(p), budgets[i], m.Config.MaxPositions)
		}
	}
	return m.eng.decoder(prompts, budgets, useCache)
}

func (d *cached) run(from, C int, tok func(r, s int) int) ([][]float32, error) {
	if from+C > d.tmax {
		return nil, fmt.Errorf("decoder is full: %d slots", d.tmax)
	}
	ids, pos, mask := d.inputs(from, C, d.tmax, tok)
	write := make([]float32, C*d.tmax)
	for c := 0; c < C; c++ {
		write[c*d.tmax+from+c] = 1
	}
	args := []any{ids, pos, mask, tensors.FromFlatDataAndDimensions(write, C, d.tmax)}
	for _, c := range d.caches {
		args = append(args, c)
	}
	out, err := d.m.run("step", stepGraph(d.m), args...)
	if err != nil {
		return nil, err
	}
	for _, c := range d.caches {
		c.FinalizeAll()
	}
	d.caches = out[1:]
	d.slot = from + C
	flat, err := toFloat32(out[0])
	if err != nil {
		return nil, err
	}
	return splitRows(flat, d.rows), nil
}

func (d *cached) Start() ([][]float32, error) { return d.run(0, d.tp, d.promptToken) }

func (d *cached) Step(tokens []int) ([][]float32, error) {
	return d.run(d.slot, 1, func(r, _ int) int { return max(0, tokens[r]) })
}

// recompute runs a full forward pass over the tokens so far at every step, as transformers
// does with use_cache=False. The window grows in steps of 16 slots to bound graph shapes.
type recompute struct {
	*layout
	gen [][]int // generated tokens per row
}

func (d *recompute) token(r, s int) int {
	if s < d.tp {
		return d.promptToken(r, s)
	}
	if g := s - d.tp; g < len(d.gen[r]) {
		return d.gen[r][g]
	}
	return 0
}

func (d *recompute) logitsAt(slot int) ([][]float32, error) {
	W := min(d.m.shapeLen(slot+1, 16), d.tmax)
	ids, pos, mask := d.inputs(0, W, W, d.token)
	sel := make([]float32, W)
	sel[slot] = 1
	out, err := d.m.run("select", selectGraph(d.m), ids, pos, mask, tensors.FromFlatDataAndDimensions(sel, W))
	if err != nil {
		return nil, err
	}
	flat, err := toFloat32(out[0])
	if err != nil {
		return nil, err
	}
	return splitRows(flat, d.rows), nil
}

func (d *recompute) Start() ([][]float32, error) {
	d.gen = make([][]int, d.rows)
	d.slot = d.tp
	return d.logitsAt(d.tp - 1)
}

func (d *recompute) Step(tokens []int) ([][]float32, error) {
	if d.slot >= d.tmax {
		return nil, fmt.Errorf("decoder is full: %d slots", d.tmax)
	}
	for r := range d.gen {
		d.gen[r] = append(d.gen[r], max(0, tokens[r]))
	}
	d.slot++
	return d.logitsAt(d.slot - 1)
}
