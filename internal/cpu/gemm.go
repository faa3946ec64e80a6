// Package cpu holds the numerical kernels of the engine's own CPU path: matrix products on
// weights packed once into column panels (float32, or bfloat16 kept as it is), computed by
// register-tiled Go assembly (AVX-512, with VDPBF16PS where the CPU has AVX-512 BF16, or
// AVX2+FMA, chosen at run time; portable Go elsewhere) on all cores, and the vector operations
// a transformer layer needs around them. It knows nothing of models or files: internal/model
// builds its forward pass from these parts.
package cpu

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"unsafe"
)

// kernel computes a tile C[mr][nr] = A[mr][k] · panel[k][nr], overwriting C, or adding to it
// when acc is 1. A's rows are lda floats apart, C's rows ldc floats apart; the panel holds nr
// floats per k.
type kernel struct {
	name   string
	mr, nr int
	fn     func(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)
	// bf16 is the same tile on a panel of bfloat16 weights, widened to float32 as they are
	// loaded: the products and sums are float32, exactly those of fn on the widened weights.
	bf16 func(k int, a *float32, lda int, b *uint16, c *float32, ldc int, acc int)
	// row and rowBF16 compute one row of a tile, in the same order as the tile's first row
	// (nil: the tile does it); a single row is what decoding one sequence multiplies.
	row     func(k int, a *float32, b *float32, c *float32, acc int)
	rowBF16 func(k int, a *float32, b *uint16, c *float32, acc int)
	// dpTile and dpRow, where the CPU has AVX-512 BF16, replace bf16 and rowBF16: they multiply
	// pairs of bfloat16 (VDPBF16PS) with float32 sums, A rounded to bfloat16 pairs (k2 of them
	// a row, lda pairs apart) and the panel laid out in pairs ([k2][nr][2]).
	dpTile func(k2 int, a *uint32, lda int, b *uint16, c *float32, ldc int, acc int)
	dpRow  func(k2 int, a *uint32, b *uint16, c *float32, acc int)
}

// pairs reports whether the kernel multiplies bf16 weights in pairs (and packs them so).
func (k kernel) pairs() bool { return k.dpTile != nil }

// goKernel is the portable kernel, used where no assembly kernel runs.
var goKernel = kernel{name: "go", mr: 4, nr: 16, fn: tileGo, bf16: tileGoBF16(4, 16)}

// tileGoBF16 returns the portable tile of mr rows and nr columns on bf16 panels.
func tileGoBF16(mr, nr int) func(k int, a *float32, lda int, b *uint16, c *float32, ldc int, add int) {
	return func(k int, a *float32, lda int, b *uint16, c *float32, ldc int, add int) {
		as := unsafeSlice(a, (mr-1)*lda+k)
		bs := unsafe.Slice(b, nr*k)
		cs := unsafeSlice(c, (mr-1)*ldc+nr)
		acc := make([]float32, mr*nr)
		if add != 0 {
			for r := 0; r < mr; r++ {
				copy(acc[r*nr:(r+1)*nr], cs[r*ldc:r*ldc+nr])
			}
		}
		w := make([]float32, nr)
		for p := 0; p < k; p++ {
			for j, h := range bs[nr*p : nr*p+nr] {
				w[j] = math.Float32frombits(uint32(h) << 16)
			}
			for r := 0; r < mr; r++ {
				x := as[r*lda+p]
				row := acc[r*nr : (r+1)*nr]
				for j, v := range w {
					row[j] += x * v
				}
			}
		}
		for r := 0; r < mr; r++ {
			copy(cs[r*ldc:r*ldc+nr], acc[r*nr:(r+1)*nr])
		}
	}
}

// KernelEnv names the environment variable that forces a kernel ("go", "avx2", "avx512",
// "avx512bf16"), for tests of the fallbacks and for comparisons; by default the fastest one
// this CPU runs.
const KernelEnv = "CYCLEALIGN_KERNEL"

// best is the kernel in use, chosen once at start.
var best = chooseKernel(os.Getenv(KernelEnv))

func chooseKernel(name string) kernel {
	if name == "" {
		return pickKernel()
	}
	for _, k := range kernels() {
		if k.name == name {
			return k
		}
	}
	fmt.Fprintf(os.Stderr, "%s=%s: not a kernel this CPU runs; using %s\n", KernelEnv, name, pickKernel().name)
	return pickKernel()
}

// Kernel names the kernel in use ("avx512bf16", "avx512", "avx2" or "go").
func Kernel() string { return best.name }

func tileGo(k int, a *float32, lda int, b *float32, c *float32, ldc int, add int) {
	as := unsafeSlice(a, 3*lda+k)
	bs := unsafeSlice(b, 16*k)
	cs := unsafeSlice(c, 3*ldc+16)
	var acc [4][16]float32
	if add != 0 {
		for r := range acc {
			copy(acc[r][:], cs[r*ldc:r*ldc+16])
		}
	}
	for p := 0; p < k; p++ {
		bp := bs[16*p : 16*p+16]
		for r := 0; r < 4; r++ {
			x := as[r*lda+p]
			row := &acc[r]
			for j, w := range bp {
				row[j] += x * w
			}
		}
	}
	for r := 0; r < 4; r++ {
		copy(cs[r*ldc:r*ldc+16], acc[r][:])
	}
}

// Packed is a weight matrix W [N][K] (torch.nn.Linear's layout) rearranged into panels of nr
// columns of Wᵀ, zero-padded to whole panels, so that a kernel reads it contiguously.
type Packed struct {
	N, K int
	k    kernel
	data []float32 // [panels][K][nr]
	// half holds bfloat16 weights instead of data: the same layout, or with a kernel that
	// multiplies bf16 pairs, [panels][K/2 rounded up][nr][2].
	half []uint16
}

// BF16 reports whether the weights are packed in bfloat16.
func (p *Packed) BF16() bool { return p.half != nil }

// pairs reports whether the product runs on bf16 pairs (dpTile, dpRow).
func (p *Packed) pairs() bool { return p.half != nil && p.k.pairs() }

// PackRowsBF16 is PackRows for bfloat16 weights (their bits), kept as they are at half the
// memory of float32: the kernels widen them as they load them, or multiply them in pairs.
func PackRowsBF16(blocks [][]uint16, k int) *Packed { return packHalf(best, rowsOf(blocks, k), k) }

func packHalf(kn kernel, rows [][]uint16, k int) *Packed {
	n, data := packPanels(kn, rows, k, kn.pairs())
	return &Packed{N: n, K: k, k: kn, half: data}
}

// ExactBF16 reports whether products with bfloat16 weights are exactly those of their float32
// widening (the kernel widens them); if not (AVX-512 BF16), the other factor is rounded to
// bfloat16 as well.
func ExactBF16() bool { return !best.pairs() }

// Pack packs w [n][k] for the kernel in use.
func Pack(w []float32, n, k int) *Packed { return PackRows([][]float32{w[:n*k]}, k) }

// PackRows packs the rows of a weight given in consecutive blocks (a fused layer's parts, each
// [rows][k]) as one matrix, without concatenating them first.
func PackRows(blocks [][]float32, k int) *Packed { return packWith(best, rowsOf(blocks, k), k) }

func rowsOf[T float32 | uint16](blocks [][]T, k int) [][]T {
	var rows [][]T
	for _, b := range blocks {
		for r := 0; r+k <= len(b); r += k {
			rows = append(rows, b[r:r+k])
		}
	}
	return rows
}

func packWith(kn kernel, rows [][]float32, k int) *Packed {
	n, data := packPanels(kn, rows, k, false)
	return &Packed{N: n, K: k, k: kn, data: data}
}

// at is where element (q, j) of a panel (reduction index q, column j of nr) lies, in the
// plain layout or in pairs along q.
func at(q, j, nr int, pairs bool) int {
	if pairs {
		return (q>>1)*2*nr + 2*j + q&1
	}
	return q*nr + j
}

// panelLen is the length of a panel of nr columns and k reduction steps (k rounded up to even
// in pairs, the odd one's partner zero).
func panelLen(k, nr int, pairs bool) int {
	if pairs {
		k += k & 1
	}
	return k * nr
}

// packPanels lays rows [n][k] out in the kernel's panels of nr columns of their transpose.
func packPanels[T float32 | uint16](kn kernel, rows [][]T, k int, pairs bool) (int, []T) {
	n := len(rows)
	panels := (n + kn.nr - 1) / kn.nr
	plen := panelLen(k, kn.nr, pairs)
	data := make([]T, panels*plen)
	const blk = 64 // rows of k read in runs, writes kept within a small block of the panel
	Parallel(panels, func(lo, hi int) {
		for pi := lo; pi < hi; pi++ {
			dst := data[pi*plen : (pi+1)*plen]
			cols := min(kn.nr, n-pi*kn.nr)
			for q0 := 0; q0 < k; q0 += blk {
				for j := 0; j < cols; j++ {
					row := rows[pi*kn.nr+j]
					for q := q0; q < min(q0+blk, k); q++ {
						dst[at(q, j, kn.nr, pairs)] = row[q]
					}
				}
			}
		}
	})
	return n, data
}

// MatMul sets c [m][N] = a [m][K] · Wᵀ.
func MatMul(c, a []float32, m int, p *Packed) { matMul(c, a, m, p, 0) }

// MatMulAdd adds a [m][K] · Wᵀ to c [m][N] (a gradient accumulating without a temporary).
func MatMulAdd(c, a []float32, m int, p *Packed) { matMul(c, a, m, p, 1) }

func matMul(c, a []float32, m int, p *Packed, acc int) {
	if !checkMul(c, a, m, p.K, p.N, acc) {
		return
	}
	kn := p.k
	a, lda := p.operand(a, m, p.K)
	rowTiles := (m + kn.mr - 1) / kn.mr
	panels := (p.N + kn.nr - 1) / kn.nr
	// Work is split along the longer of the two tile axes, so both cores stay busy whether
	// there are few rows (decoding) or few columns.
	byRows := rowTiles >= panels
	units := panels
	if byRows {
		units = rowTiles
	}
	Parallel(units, func(lo, hi int) {
		t := tiler{a: a, lda: lda, m: m, c: c, ldc: p.N}
		do := func(rt, pi int) { t.do(p, pi, rt, pi*kn.nr, min(kn.nr, p.N-pi*kn.nr), 0, acc) }
		// The outer loop runs over this worker's share, so what it streams (a row tile, or a
		// panel) stays in cache while the inner loop reuses it.
		for u := lo; u < hi; u++ {
			if byRows {
				for pi := 0; pi < panels; pi++ {
					do(u, pi)
				}
			} else {
				for rt := 0; rt < rowTiles; rt++ {
					do(rt, u)
				}
			}
		}
	})
}

// checkMul checks the operands of a product of c [m][n] = a [m][k] · (a matrix [k][n]) and
// reports whether there is anything to multiply (an empty sum clears c, or leaves it to add to).
func checkMul(c, a []float32, m, k, n, acc int) bool {
	if m == 0 || n == 0 {
		return false
	}
	if len(a) < m*k || len(c) < m*n {
		panic("cpu.MatMul: slice too short")
	}
	if k == 0 {
		if acc == 0 {
			clear(c[:m*n])
		}
		return false
	}
	return true
}

// operand returns a [m][k] as the kernel reads it, and its rows' stride: as it is, or on bf16
// pairs rounded two by two (lda words that each hold two bf16).
func (p *Packed) operand(a []float32, m, k int) ([]float32, int) {
	if p.pairs() {
		return bf16Pairs(a, m, k), (k + 1) / 2
	}
	return a, k
}

// tiler computes C's tiles from a worker's share of panels, with the buffers it reuses.
type tiler struct {
	a       []float32 // A as the kernel reads it (operand)
	lda, m  int
	c       []float32
	ldc     int
	part    []float32 // a partial tile
	padA    []float32 // the last row tile, zero-padded to mr rows
	padFrom int       // the row tile padA holds
}

// do computes C's tile of row tile rt and columns [col, col+cols) from panel pi of p, reading
// A's rows from column (or pair) off on.
func (t *tiler) do(p *Packed, pi, rt, col, cols, off, acc int) {
	kn := p.k
	row := rt * kn.mr
	rows := min(kn.mr, t.m-row)
	src := t.a[row*t.lda+off:]
	c := t.c[row*t.ldc+col:]
	if t.part == nil {
		t.part = make([]float32, kn.mr*kn.nr)
	}
	if rows == 1 && p.hasRow() {
		if cols == kn.nr {
			p.row(pi, &src[0], &c[0], acc)
			return
		}
		copy(t.part, c[:cols])
		p.row(pi, &src[0], &t.part[0], acc)
		copy(c[:cols], t.part[:cols])
		return
	}
	if rows < kn.mr {
		if t.padA == nil || t.padFrom != row {
			t.padA = make([]float32, kn.mr*t.lda)
			copy(t.padA, t.a[row*t.lda:(row+rows)*t.lda])
			t.padFrom = row
		}
		src = t.padA[off:]
	}
	if rows == kn.mr && cols == kn.nr {
		p.tile(pi, &src[0], t.lda, &c[0], t.ldc, acc)
		return
	}
	if acc != 0 { // the partial tile starts from C's values
		clear(t.part)
		for r := 0; r < rows; r++ {
			copy(t.part[r*kn.nr:r*kn.nr+cols], c[r*t.ldc:r*t.ldc+cols])
		}
	}
	p.tile(pi, &src[0], t.lda, &t.part[0], kn.nr, acc)
	for r := 0; r < rows; r++ {
		copy(c[r*t.ldc:r*t.ldc+cols], t.part[r*kn.nr:r*kn.nr+cols])
	}
}

// tile runs the kernel on panel pi: C[mr][nr] (rows ldc apart) = A[mr][K] (rows lda apart) ·
// panel. On bf16 pairs, a points to A's pairs (the words of bf16Pairs).
func (p *Packed) tile(pi int, a *float32, lda int, c *float32, ldc, acc int) {
	kn, off := p.k, p.panel(pi)
	switch {
	case p.pairs():
		kn.dpTile((p.K+1)/2, (*uint32)(unsafe.Pointer(a)), lda, &p.half[off], c, ldc, acc)
	case p.half != nil:
		kn.bf16(p.K, a, lda, &p.half[off], c, ldc, acc)
	default:
		kn.fn(p.K, a, lda, &p.data[off], c, ldc, acc)
	}
}

// panel is where panel pi starts in the packing.
func (p *Packed) panel(pi int) int { return pi * panelLen(p.K, p.k.nr, p.pairs()) }

func (p *Packed) hasRow() bool {
	switch {
	case p.pairs():
		return p.k.dpRow != nil
	case p.half != nil:
		return p.k.rowBF16 != nil
	}
	return p.k.row != nil
}

// row runs the one-row kernel on panel pi: C[nr] = A[K] · panel.
func (p *Packed) row(pi int, a, c *float32, acc int) {
	off := p.panel(pi)
	switch {
	case p.pairs():
		p.k.dpRow((p.K+1)/2, (*uint32)(unsafe.Pointer(a)), &p.half[off], c, acc)
	case p.half != nil:
		p.k.rowBF16(p.K, a, &p.half[off], c, acc)
	default:
		p.k.row(p.K, a, &p.data[off], c, acc)
	}
}

// MatMulTAdd adds a [m][N] · W to c [m][K]: the product a backward pass needs (the gradient
// flowing from a layer's outputs to its inputs), read from W's own packing rather than from a
// second, transposed one. Each worker transposes the panels of C's columns it computes, a
// block of the reduction at a time, into a buffer that stays in cache, reading W's packing in
// long runs; the sums run in the same order as MatMulAdd's on PackTransposed(W), so the result
// is the same bit for bit.
func MatMulTAdd(c, a []float32, m int, p *Packed) {
	if !checkMul(c, a, m, p.N, p.K, 1) {
		return
	}
	kn := p.k
	pairs := p.pairs()
	a, lda := p.operand(a, m, p.N)
	const (
		kc    = 1024 // reduction steps a block holds: even, a multiple of every nr
		group = 16   // panels transposed together: a block of them is a few hundred KiB
	)
	rowTiles := (m + kn.mr - 1) / kn.mr
	panels := (p.K + kn.nr - 1) / kn.nr
	// Work is split by column panels, and by row tiles too where there are fewer panels than
	// cores (an adapter's rank-wide product): unit u is panel u%panels of row share u/panels.
	shares := max(1, min(rowTiles, runtime.GOMAXPROCS(0)/panels))
	blen := panelLen(kc, kn.nr, pairs)
	Parallel(panels*shares, func(lo, hi int) {
		t := tiler{a: a, lda: lda, m: m, c: c, ldc: p.K}
		var buf16 []uint16
		var buf32 []float32
		if p.half != nil {
			buf16 = make([]uint16, min(group, hi-lo)*blen)
		} else {
			buf32 = make([]float32, min(group, hi-lo)*blen)
		}
		for u := lo; u < hi; {
			sh, g0 := u/panels, u%panels
			g1 := min(g0+group, panels, hi-sh*panels)
			u += g1 - g0
			c0, c1 := g0*kn.nr, min(g1*kn.nr, p.K)
			for n0 := 0; n0 < p.N; n0 += kc {
				nb := min(kc, p.N-n0)
				if p.half != nil {
					transposePanels(buf16, p.half, p, c0, c1, n0, nb, blen)
				} else {
					transposePanels(buf32, p.data, p, c0, c1, n0, nb, blen)
				}
				off := n0
				if pairs {
					off = n0 / 2
				}
				for pi := g0; pi < g1; pi++ {
					col := pi * kn.nr
					blk := &Packed{N: min(kn.nr, p.K-col), K: nb, k: kn}
					if p.half != nil {
						blk.half = buf16[(pi-g0)*blen:]
					} else {
						blk.data = buf32[(pi-g0)*blen:]
					}
					for rt := rowTiles * sh / shares; rt < rowTiles*(sh+1)/shares; rt++ {
						t.do(blk, 0, rt, col, blk.N, off, 1)
					}
				}
			}
		}
	})
}

// transposePanels sets dst to the panels of Wᵀ (p's matrix transposed) of W's columns [c0, c1)
// (whole panels but the last) and rows [n0, n0+nb), plen apart: the panels PackTransposed(W)
// has there, cut to those rows. n0 is a multiple of nr.
func transposePanels[T float32 | uint16](dst, src []T, p *Packed, c0, c1, n0, nb, plen int) {
	nr, pairs := p.k.nr, p.pairs()
	if (c1-c0)%nr != 0 || nb&1 == 1 {
		clear(dst)
	}
	for s0 := n0; s0 < n0+nb; s0 += nr { // W's rows in one of its panels
		rows := min(nr, n0+nb-s0)
		from := src[p.panel(s0/nr):]
		if pairs && nr == 32 && rows == nr && (c1-c0)%nr == 0 {
			// In 32×32 tiles, read as 16×16 words of two rows by two columns: W's pair of
			// columns in a row and the next row's lie side by side, and become Wᵀ's pair of
			// rows in a column and the next column's.
			s64 := unsafe.Slice((*uint64)(unsafe.Pointer(&from[(c0>>1)*2*nr])), (c1-c0)*nr/4)
			d64 := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)/4)
			for pd := 0; pd < (c1-c0)/nr; pd++ {
				transposePairs((*[256]uint64)(d64[(pd*plen+(s0-n0)*nr)/4:]), (*[256]uint64)(s64[pd*256:]))
			}
			continue
		}
		for k := c0; k < c1; k++ {
			to := dst[((k-c0)/nr)*plen:]
			for jn := 0; jn < rows; jn++ {
				to[at(s0-n0+jn, (k-c0)%nr, nr, pairs)] = from[at(k, jn, nr, pairs)]
			}
		}
	}
}

// transposePairs transposes 16×16 words of four bf16, each a pair of a row's reduction steps
// and the next row's, swapping each word's middle two into a pair of a column's and the next
// column's.
func transposePairs(to, from *[256]uint64) {
	for i := 0; i < 16; i++ {
		for j := 0; j < 16; j++ {
			v := from[j*16+i]
			to[i*16+j] = v&0xffff00000000ffff | v>>16&0xffff0000 | v<<16&0xffff00000000
		}
	}
}

// Row sets dst [K] to row i of W, widened to float32: an embedding read from the packing of
// the head tied to it, so that the model keeps one copy.
func (p *Packed) Row(i int, dst []float32) {
	nr, pairs := p.k.nr, p.pairs()
	base := p.panel(i / nr)
	for q := range dst[:p.K] {
		if p.half != nil {
			dst[q] = math.Float32frombits(uint32(p.half[base+at(q, i%nr, nr, pairs)]) << 16)
		} else {
			dst[q] = p.data[base+at(q, i%nr, nr, pairs)]
		}
	}
}

// bf16Pairs rounds a [m][k] to bfloat16 (to nearest even) two by two: word q of a row holds
// element 2q in its low half and 2q+1 (zero past the end) in its high half, as VDPBF16PS
// pairs them. The words are returned as float32s for the tiles' indexing, never as numbers.
func bf16Pairs(a []float32, m, k int) []float32 {
	k2 := (k + 1) / 2
	out := make([]float32, m*k2)
	words := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(out))), len(out))
	Parallel(m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, dst := a[r*k:(r+1)*k], words[r*k2:(r+1)*k2]
			for q := range dst {
				w := uint32(RoundBF16(row[2*q]))
				if 2*q+1 < k {
					w |= uint32(RoundBF16(row[2*q+1])) << 16
				}
				dst[q] = w
			}
		}
	})
	return out
}

// RoundBF16 rounds to the nearest bfloat16 (its bits), ties to even, as torch does when it
// casts float32 to bfloat16 and as VCVTNEPS2BF16 does.
func RoundBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// PackTransposed packs w [n][k] so that MatMul computes c [m][k] = a [m][n] · w: the layout of
// an activation that a weight gradient multiplies (xᵀ·dy), or of a GPT-2 Conv1D stored [in][out].
func PackTransposed(w []float32, n, k int) *Packed {
	nr := best.nr
	panels := (k + nr - 1) / nr
	data := make([]float32, panels*n*nr)
	// Row by row: each row is read once, in order, and its pieces go to every panel.
	Parallel(n, func(lo, hi int) {
		for q := lo; q < hi; q++ {
			for pi := 0; pi < panels; pi++ {
				cols := min(nr, k-pi*nr)
				copy(data[pi*n*nr+q*nr:pi*n*nr+q*nr+cols], w[q*k+pi*nr:q*k+pi*nr+cols])
			}
		}
	})
	return &Packed{N: k, K: n, k: best, data: data}
}

// AddMatMulTN adds dyᵀ·x to dw: dw [n][k] += Σ_r dy[r][n]·x[r][k] over m rows, a weight's
// gradient from its layer's output gradient dy [m][n] and input x [m][k].
func AddMatMulTN(dw, dy, x []float32, m, n, k int) {
	if m == 0 {
		return
	}
	MatMulAdd(dw[:n*k], Transpose(dy, m, n), n, PackTransposed(x, m, k))
}

// Transpose returns the [n][m] transpose of x [m][n].
func Transpose(x []float32, m, n int) []float32 {
	t := make([]float32, n*m)
	const blk = 64 // in cache-sized blocks: both sides are read or written in short runs
	Parallel((n+blk-1)/blk, func(lo, hi int) {
		for jb := lo * blk; jb < min(hi*blk, n); jb += blk {
			for rb := 0; rb < m; rb += blk {
				for j := jb; j < min(jb+blk, n); j++ {
					for r := rb; r < min(rb+blk, m); r++ {
						t[j*m+r] = x[r*n+j]
					}
				}
			}
		}
	})
	return t
}
