// Package cpu holds the numerical kernels of the engine's own CPU path: matrix products on
// weights packed once into column panels, computed by register-tiled Go assembly (AVX-512 or
// AVX2+FMA, chosen at run time; portable Go elsewhere) on all cores, and the vector operations
// a transformer layer needs around them. It knows nothing of models or files: internal/model
// builds its forward pass from these parts.
package cpu

import (
	"fmt"
	"os"
	"runtime"
	"sync"
)

// kernel computes a tile C[mr][nr] = A[mr][k] · panel[k][nr], overwriting C, or adding to it
// when acc is 1. A's rows are lda floats apart, C's rows ldc floats apart; the panel holds nr
// floats per k.
type kernel struct {
	name   string
	mr, nr int
	fn     func(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)
}

// goKernel is the portable kernel, used where no assembly kernel runs.
var goKernel = kernel{name: "go", mr: 4, nr: 16, fn: tileGo}

// KernelEnv names the environment variable that forces a kernel ("go", "avx2", "avx512"),
// for tests of the fallbacks and for comparisons; by default the fastest one this CPU runs.
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

// Kernel names the kernel in use ("avx512", "avx2" or "go").
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
}

// Pack packs w [n][k] for the kernel in use.
func Pack(w []float32, n, k int) *Packed { return PackRows([][]float32{w[:n*k]}, k) }

// PackRows packs the rows of a weight given in consecutive blocks (a fused layer's parts, each
// [rows][k]) as one matrix, without concatenating them first.
func PackRows(blocks [][]float32, k int) *Packed { return packWith(best, rowsOf(blocks, k), k) }

func rowsOf(blocks [][]float32, k int) [][]float32 {
	var rows [][]float32
	for _, b := range blocks {
		for r := 0; r+k <= len(b); r += k {
			rows = append(rows, b[r:r+k])
		}
	}
	return rows
}

func packWith(kn kernel, rows [][]float32, k int) *Packed {
	n := len(rows)
	panels := (n + kn.nr - 1) / kn.nr
	p := &Packed{N: n, K: k, k: kn, data: make([]float32, panels*k*kn.nr)}
	const blk = 64 // rows of k read in runs, writes kept within a small block of the panel
	Parallel(panels, func(lo, hi int) {
		for pi := lo; pi < hi; pi++ {
			dst := p.data[pi*k*kn.nr : (pi+1)*k*kn.nr]
			cols := min(kn.nr, n-pi*kn.nr)
			for q0 := 0; q0 < k; q0 += blk {
				for j := 0; j < cols; j++ {
					row := rows[pi*kn.nr+j]
					for q := q0; q < min(q0+blk, k); q++ {
						dst[q*kn.nr+j] = row[q]
					}
				}
			}
		}
	})
	return p
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
		tile := make([]float32, kn.mr*kn.nr)
		var padA []float32 // the last row tile, zero-padded to mr rows
		do := func(rt, pi int) {
			row, col := rt*kn.mr, pi*kn.nr
			rows, cols := min(kn.mr, m-row), min(kn.nr, p.N-col)
			src := a[row*p.K:]
			if rows < kn.mr {
				if padA == nil {
					padA = make([]float32, kn.mr*p.K)
					copy(padA, a[row*p.K:(row+rows)*p.K])
				}
				src = padA
			}
			b := &p.data[pi*p.K*kn.nr]
			if rows == kn.mr && cols == kn.nr {
				kn.fn(p.K, &src[0], p.K, b, &c[row*p.N+col], p.N, acc)
				return
			}
			if acc != 0 { // the partial tile starts from C's values
				clear(tile)
				for r := 0; r < rows; r++ {
					copy(tile[r*kn.nr:r*kn.nr+cols], c[(row+r)*p.N+col:(row+r)*p.N+col+cols])
				}
			}
			kn.fn(p.K, &src[0], p.K, b, &tile[0], kn.nr, acc)
			for r := 0; r < rows; r++ {
				copy(c[(row+r)*p.N+col:(row+r)*p.N+col+cols], tile[r*kn.nr:r*kn.nr+cols])
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

// Parallel runs fn over [0,n) split into one contiguous range per core.
func Parallel(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// PackTransposed packs w [n][k] so that MatMul computes c [m][k] = a [m][n] · w, the product a
// backward pass needs (the gradient flowing from a layer's outputs to its inputs).
func PackTransposed(w []float32, n, k int) *Packed {
	return PackRowsTransposed([][]float32{w[:n*k]}, k)
}

// PackRowsTransposed is PackTransposed of a weight given in consecutive row blocks.
func PackRowsTransposed(blocks [][]float32, k int) *Packed {
	kn := best
	rows := rowsOf(blocks, k)
	n := len(rows)
	panels := (k + kn.nr - 1) / kn.nr
	p := &Packed{N: k, K: n, k: kn, data: make([]float32, panels*n*kn.nr)}
	// Row by row: each row is read once, in order, and its pieces go to every panel.
	Parallel(n, func(lo, hi int) {
		for q := lo; q < hi; q++ {
			row := rows[q]
			for pi := 0; pi < panels; pi++ {
				cols := min(kn.nr, k-pi*kn.nr)
				copy(p.data[pi*n*kn.nr+q*kn.nr:pi*n*kn.nr+q*kn.nr+cols], row[pi*kn.nr:pi*kn.nr+cols])
			}
		}
	})
	return p
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
