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
	if m == 0 || p.N == 0 {
		return
	}
	if len(a) < m*p.K || len(c) < m*p.N {
		panic("cpu.MatMul: slice too short")
	}
	if p.K == 0 {
		if acc == 0 {
			clear(c[:m*p.N])
		}
		return
	}
	kn := p.k
	// A's rows are lda floats apart; on bf16 pairs, lda words that each hold two bf16.
	lda := p.K
	if p.pairs() {
		lda = (p.K + 1) / 2
		a = bf16Pairs(a, m, p.K)
	}
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
		part := make([]float32, kn.mr*kn.nr) // a partial tile
		var padA []float32                   // the last row tile, zero-padded to mr rows
		do := func(rt, pi int) {
			row, col := rt*kn.mr, pi*kn.nr
			rows, cols := min(kn.mr, m-row), min(kn.nr, p.N-col)
			src := a[row*lda:]
			if rows == 1 && p.hasRow() {
				if cols == kn.nr {
					p.row(pi, &src[0], &c[row*p.N+col], acc)
					return
				}
				copy(part, c[row*p.N+col:row*p.N+col+cols])
				p.row(pi, &src[0], &part[0], acc)
				copy(c[row*p.N+col:row*p.N+col+cols], part[:cols])
				return
			}
			if rows < kn.mr {
				if padA == nil {
					padA = make([]float32, kn.mr*lda)
					copy(padA, a[row*lda:(row+rows)*lda])
				}
				src = padA
			}
			if rows == kn.mr && cols == kn.nr {
				p.tile(pi, &src[0], &c[row*p.N+col], p.N, acc)
				return
			}
			if acc != 0 { // the partial tile starts from C's values
				clear(part)
				for r := 0; r < rows; r++ {
					copy(part[r*kn.nr:r*kn.nr+cols], c[(row+r)*p.N+col:(row+r)*p.N+col+cols])
				}
			}
			p.tile(pi, &src[0], &part[0], kn.nr, acc)
			for r := 0; r < rows; r++ {
				copy(c[(row+r)*p.N+col:(row+r)*p.N+col+cols], part[r*kn.nr:r*kn.nr+cols])
			}
		}
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

// tile runs the kernel on panel pi: C[mr][nr] (rows ldc apart) = A[mr][K] (rows K apart) · panel.
// On bf16 pairs, a points to A's pairs (the words of bf16Pairs).
func (p *Packed) tile(pi int, a, c *float32, ldc, acc int) {
	kn := p.k
	switch {
	case p.pairs():
		k2 := (p.K + 1) / 2
		kn.dpTile(k2, (*uint32)(unsafe.Pointer(a)), k2, &p.half[pi*2*k2*kn.nr], c, ldc, acc)
	case p.half != nil:
		kn.bf16(p.K, a, p.K, &p.half[pi*p.K*kn.nr], c, ldc, acc)
	default:
		kn.fn(p.K, a, p.K, &p.data[pi*p.K*kn.nr], c, ldc, acc)
	}
}

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
	switch {
	case p.pairs():
		k2 := (p.K + 1) / 2
		p.k.dpRow(k2, (*uint32)(unsafe.Pointer(a)), &p.half[pi*2*k2*p.k.nr], c, acc)
	case p.half != nil:
		p.k.rowBF16(p.K, a, &p.half[pi*p.K*p.k.nr], c, acc)
	default:
		p.k.row(p.K, a, &p.data[pi*p.K*p.k.nr], c, acc)
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

// PackTransposed packs w [n][k] so that MatMul computes c [m][k] = a [m][n] · w, the product a
// backward pass needs (the gradient flowing from a layer's outputs to its inputs).
func PackTransposed(w []float32, n, k int) *Packed {
	return PackRowsTransposed([][]float32{w[:n*k]}, k)
}

// PackRowsTransposed is PackTransposed of a weight given in consecutive row blocks.
func PackRowsTransposed(blocks [][]float32, k int) *Packed {
	n, data := packTransposed(best, rowsOf(blocks, k), k, false)
	return &Packed{N: k, K: n, k: best, data: data}
}

// PackRowsTransposedBF16 is PackRowsTransposed for bfloat16 weights.
func PackRowsTransposedBF16(blocks [][]uint16, k int) *Packed {
	n, data := packTransposed(best, rowsOf(blocks, k), k, best.pairs())
	return &Packed{N: k, K: n, k: best, half: data}
}

func packTransposed[T float32 | uint16](kn kernel, rows [][]T, k int, pairs bool) (int, []T) {
	n := len(rows)
	panels := (k + kn.nr - 1) / kn.nr
	plen := panelLen(n, kn.nr, pairs)
	data := make([]T, panels*plen)
	// Row by row: each row is read once, in order, and its pieces go to every panel.
	Parallel(n, func(lo, hi int) {
		for q := lo; q < hi; q++ {
			row := rows[q]
			for pi := 0; pi < panels; pi++ {
				cols := min(kn.nr, k-pi*kn.nr)
				if !pairs {
					copy(data[pi*plen+q*kn.nr:pi*plen+q*kn.nr+cols], row[pi*kn.nr:pi*kn.nr+cols])
					continue
				}
				for j := 0; j < cols; j++ {
					data[pi*plen+at(q, j, kn.nr, true)] = row[pi*kn.nr+j]
				}
			}
		}
	})
	return n, data
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
