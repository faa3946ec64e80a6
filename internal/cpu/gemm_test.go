package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randSlice(r *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64())
	}
	return out
}

// TestMatMulEveryKernel checks each kernel this CPU runs against a float64 product, on sizes
// that leave partial row tiles and partial panels.
func TestMatMulEveryKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, kn := range kernels() {
		for _, m := range []int{1, 5, 6, 8, 13, 16, 33} {
			for _, n := range []int{1, 15, 16, 17, 32, 50, 100} {
				for _, k := range []int{1, 3, 64, 257} {
					a, w := randSlice(r, m*k), randSlice(r, n*k)
					c := make([]float32, m*n)
					for i := range c {
						c[i] = float32(math.NaN()) // every element must be written
					}
					p := packWith(kn, rowsOf([][]float32{w}, k), k)
					MatMul(c, a, m, p)
					// Accumulating: c + a·Wᵀ again must give twice the product.
					twice := append([]float32(nil), c...)
					MatMulAdd(twice, a, m, p)
					for i := range twice {
						if d := math.Abs(float64(twice[i] - 2*c[i])); d > 1e-4*(1+math.Abs(float64(c[i]))) {
							t.Fatalf("%s m=%d n=%d k=%d: accumulated %v, want %v", kn.name, m, n, k, twice[i], 2*c[i])
						}
					}
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							want := 0.0
							for q := 0; q < k; q++ {
								want += float64(a[i*k+q]) * float64(w[j*k+q])
							}
							if got := float64(c[i*n+j]); !(math.Abs(got-want) <= 1e-5*math.Sqrt(float64(k))*(1+math.Abs(want))) {
								t.Fatalf("%s m=%d n=%d k=%d: c[%d][%d] = %v, want %v", kn.name, m, n, k, i, j, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// TestMatMulBF16EqualsWidened: on bfloat16 panels every widening kernel computes exactly what
// it computes on float32 panels of the same weights widened (the products and sums are
// float32), including partial tiles and accumulation; a kernel that multiplies bf16 pairs
// computes the product of A rounded to bf16 and the weights, within float32 summation error.
func TestMatMulBF16EqualsWidened(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, kn := range kernels() {
		for _, m := range []int{1, 5, 8, 13, 33} {
			for _, n := range []int{1, 17, 32, 50} {
				for _, k := range []int{1, 3, 64, 257} {
					a, w := randSlice(r, m*k), randSlice(r, n*k)
					half := make([]uint16, len(w))
					for i, v := range w {
						half[i] = uint16(math.Float32bits(v) >> 16)
						w[i] = math.Float32frombits(uint32(half[i]) << 16)
					}
					pb := packHalf(kn, rowsOf([][]uint16{half}, k), k)
					pf := packWith(kn, rowsOf([][]float32{w}, k), k)
					cb, cf := randSlice(r, m*n), make([]float32, m*n)
					copy(cf, cb)
					MatMulAdd(cb, a, m, pb)
					if kn.pairs() {
						checkPairProduct(t, kn.name, cb, cf, a, w, m, n, k)
						continue
					}
					MatMulAdd(cf, a, m, pf)
					if !slices.Equal(cb, cf) {
						t.Fatalf("%s m=%d n=%d k=%d: bf16 panels %v, widened float32 %v", kn.name, m, n, k, cb[:min(4, len(cb))], cf[:min(4, len(cf))])
					}
					MatMul(cb, a, m, pb)
					MatMul(cf, a, m, pf)
					if !slices.Equal(cb, cf) {
						t.Fatalf("%s m=%d n=%d k=%d: overwriting differs", kn.name, m, n, k)
					}
				}
			}
		}
	}
	if p := PackRowsBF16([][]uint16{make([]uint16, 6)}, 3); !p.BF16() || p.data != nil || len(p.half) < 6 {
		t.Fatal("PackRowsBF16 does not keep bfloat16")
	}
}

// checkPairProduct checks got = c0 + bf16(a)·wᵀ (w holds bf16 values) against float64 sums:
// the products of two bf16 are exact in float32, so only the float32 sums may differ, and a
// kernel that left A unrounded, or paired the wrong halves, is far off.
func checkPairProduct(t *testing.T, name string, got, c0, a, w []float32, m, n, k int) {
	t.Helper()
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			want := float64(c0[i*n+j])
			for q := 0; q < k; q++ {
				ar := math.Float32frombits(uint32(RoundBF16(a[i*k+q])) << 16)
				want += float64(ar) * float64(w[j*k+q])
			}
			if g := float64(got[i*n+j]); !(math.Abs(g-want) <= 1e-5*math.Sqrt(float64(k))*(1+math.Abs(want))) {
				t.Fatalf("%s m=%d n=%d k=%d: c[%d][%d] = %v, want %v", name, m, n, k, i, j, g, want)
			}
		}
	}
}

// TestRowAloneEqualsRowInTile: one row multiplied alone (the one-row kernels of decoding)
// gives exactly what it gives inside a tile of rows, in float32 and bfloat16.
func TestRowAloneEqualsRowInTile(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, kn := range kernels() {
		for _, n := range []int{7, 32, 70} {
			k := 129
			a, w := randSlice(r, 11*k), randSlice(r, n*k)
			half := make([]uint16, len(w))
			for i, v := range w {
				half[i] = uint16(math.Float32bits(v) >> 16)
			}
			for _, p := range []*Packed{packWith(kn, rowsOf([][]float32{w}, k), k), packHalf(kn, rowsOf([][]uint16{half}, k), k)} {
				all := make([]float32, 11*n)
				MatMul(all, a, 11, p)
				for i := 0; i < 11; i++ {
					one := make([]float32, n)
					MatMul(one, a[i*k:(i+1)*k], 1, p)
					if !slices.Equal(one, all[i*n:(i+1)*n]) {
						t.Fatalf("%s bf16=%v n=%d row %d: alone %v, in a tile %v", kn.name, p.BF16(), n, i, one[:3], all[i*n:i*n+3])
					}
				}
			}
		}
	}
}

// BenchmarkMatMul reports GFLOP/s of each kernel on the bench model's shapes: a scoring batch
// (2048 rows), a decoding step (16 rows), and one row on a 16 MiB weight (batch-1 decoding, bound
// by reading the weight), in float32 and bfloat16.
func BenchmarkMatMul(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, kn := range kernels() {
		for _, s := range []struct {
			m, n, k int
			bf16    bool
		}{{2048, 256, 256, false}, {2048, 688, 256, false}, {16, 8192, 256, false}, {16, 688, 256, false},
			{1, 4096, 1024, false}, {1, 4096, 1024, true}, {2048, 688, 256, true}} {
			dt := "f32"
			if s.bf16 {
				dt = "bf16"
			}
			b.Run(fmt.Sprintf("%s/%s/%dx%dx%d", kn.name, dt, s.m, s.n, s.k), func(b *testing.B) {
				a, w := randSlice(r, s.m*s.k), randSlice(r, s.n*s.k)
				p := packWith(kn, rowsOf([][]float32{w}, s.k), s.k)
				if s.bf16 {
					half := make([]uint16, len(w))
					for i, v := range w {
						half[i] = uint16(math.Float32bits(v) >> 16)
					}
					p = packHalf(kn, rowsOf([][]uint16{half}, s.k), s.k)
				}
				c := make([]float32, s.m*s.n)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					MatMul(c, a, s.m, p)
				}
				b.ReportMetric(float64(2*s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func TestDotAndAxpy(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 100, 128} {
		a, b := randSlice(r, n), randSlice(r, n)
		want := 0.0
		for i := range a {
			want += float64(a[i]) * float64(b[i])
		}
		if got := float64(Dot(a, b)); math.Abs(got-want) > 1e-5*(1+math.Abs(want))*math.Sqrt(float64(n+1)) {
			t.Fatalf("Dot n=%d: %v, want %v", n, got, want)
		}
		y := append([]float32(nil), b...)
		Axpy(0.5, a, y)
		for i := range y {
			if math.Abs(float64(y[i])-(float64(b[i])+0.5*float64(a[i]))) > 1e-6 {
				t.Fatalf("Axpy n=%d i=%d: %v", n, i, y[i])
			}
		}
	}
}

func TestTransposedProducts(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, s := range []struct{ m, n, k int }{{1, 1, 1}, {7, 13, 40}, {33, 70, 17}, {64, 32, 48}} {
		a, w := randSlice(r, s.m*s.n), randSlice(r, s.n*s.k)
		c := make([]float32, s.m*s.k)
		MatMul(c, a, s.m, PackTransposed(w, s.n, s.k)) // c = a · w
		dw := randSlice(r, s.n*s.k)
		before := append([]float32(nil), dw...)
		x := randSlice(r, s.m*s.k)
		AddMatMulTN(dw, a, x, s.m, s.n, s.k) // dw += aᵀ · x
		for i := 0; i < s.m; i++ {
			for j := 0; j < s.k; j++ {
				want := 0.0
				for q := 0; q < s.n; q++ {
					want += float64(a[i*s.n+q]) * float64(w[q*s.k+j])
				}
				if math.Abs(float64(c[i*s.k+j])-want) > 1e-4*(1+math.Abs(want)) {
					t.Fatalf("%v: (a·w)[%d][%d] = %v, want %v", s, i, j, c[i*s.k+j], want)
				}
			}
		}
		for j := 0; j < s.n; j++ {
			for q := 0; q < s.k; q++ {
				want := float64(before[j*s.k+q])
				for i := 0; i < s.m; i++ {
					want += float64(a[i*s.n+j]) * float64(x[i*s.k+q])
				}
				if math.Abs(float64(dw[j*s.k+q])-want) > 1e-4*(1+math.Abs(want)) {
					t.Fatalf("%v: dw[%d][%d] = %v, want %v", s, j, q, dw[j*s.k+q], want)
				}
			}
		}
	}
}

// TestPackRowsEqualsConcatenation: packing a fused weight from its blocks equals packing the
// concatenated matrix.
func TestPackRowsEqualsConcatenation(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	k := 70
	blocks := [][]float32{randSlice(r, 33*k), randSlice(r, 5*k), randSlice(r, 17*k)}
	var cat []float32
	for _, b := range blocks {
		cat = append(cat, b...)
	}
	n := len(cat) / k
	a, b := PackRows(blocks, k), Pack(cat, n, k)
	if a.N != b.N || a.K != b.K || !slices.Equal(a.data, b.data) {
		t.Fatalf("packings differ: %dx%d vs %dx%d", a.N, a.K, b.N, b.K)
	}
}

// TestMatMulTAddEqualsTransposedPacking: the product with W read from its own packing equals,
// bit for bit, the product on W transposed and packed (the second packing it replaces), for
// every kernel, float32 and bfloat16, with row tiles and column panels cut short, a reduction
// longer than one block, more panels than a worker transposes at once and fewer than cores; and both are a · W within float32 summation error.
func TestMatMulTAddEqualsTransposedPacking(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, kn := range kernels() {
		for _, s := range []struct{ m, n, k int }{{1, 5, 3}, {9, 70, 33}, {17, 2101, 40}, {8, 64, 96}, {3, 2112, 1088}, {5, 66, 1100}, {41, 300, 16}} {
			w := randSlice(r, s.n*s.k) // W [n][k]: the product is a [m][n] · W
			half := make([]uint16, len(w))
			for i, v := range w {
				half[i] = uint16(math.Float32bits(v) >> 16)
			}
			wT, halfT := make([]float32, len(w)), make([]uint16, len(w))
			for i := 0; i < s.n; i++ {
				for j := 0; j < s.k; j++ {
					wT[j*s.n+i], halfT[j*s.n+i] = w[i*s.k+j], half[i*s.k+j]
				}
			}
			for _, bf16 := range []bool{false, true} {
				p, pT := packWith(kn, rowsOf([][]float32{w}, s.k), s.k), packWith(kn, rowsOf([][]float32{wT}, s.n), s.n)
				ws := w
				if bf16 {
					p, pT = packHalf(kn, rowsOf([][]uint16{half}, s.k), s.k), packHalf(kn, rowsOf([][]uint16{halfT}, s.n), s.n)
					ws = make([]float32, len(w))
					for i, h := range half {
						ws[i] = math.Float32frombits(uint32(h) << 16)
					}
				}
				a, c0 := randSlice(r, s.m*s.n), randSlice(r, s.m*s.k)
				got, want := slices.Clone(c0), slices.Clone(c0)
				MatMulTAdd(got, a, s.m, p)
				MatMulAdd(want, a, s.m, pT)
				if !slices.Equal(got, want) {
					t.Fatalf("%s bf16=%v %v: read transposed %v, on the transposed packing %v", kn.name, bf16, s, got[:3], want[:3])
				}
				for i := 0; i < s.m; i++ {
					for j := 0; j < s.k; j++ {
						sum := float64(c0[i*s.k+j])
						for q := 0; q < s.n; q++ {
							x := a[i*s.n+q]
							if p.pairs() {
								x = math.Float32frombits(uint32(RoundBF16(x)) << 16)
							}
							sum += float64(x) * float64(ws[q*s.k+j])
						}
						if g := float64(got[i*s.k+j]); !(math.Abs(g-sum) <= 1e-5*math.Sqrt(float64(s.n))*(1+math.Abs(sum))) {
							t.Fatalf("%s bf16=%v %v: c[%d][%d] = %v, want %v", kn.name, bf16, s, i, j, g, sum)
						}
					}
				}
			}
		}
	}
}

// TestPackedRow: a row read back from a packing is the matrix's row, in every layout.
func TestPackedRow(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	n, k := 37, 21
	w := randSlice(r, n*k)
	half := make([]uint16, len(w))
	for i, v := range w {
		half[i] = uint16(math.Float32bits(v) >> 16)
	}
	for _, kn := range kernels() {
		p, ph := packWith(kn, rowsOf([][]float32{w}, k), k), packHalf(kn, rowsOf([][]uint16{half}, k), k)
		got := make([]float32, k)
		for i := 0; i < n; i++ {
			p.Row(i, got)
			if !slices.Equal(got, w[i*k:(i+1)*k]) {
				t.Fatalf("%s float32 row %d: %v, want %v", kn.name, i, got[:3], w[i*k:i*k+3])
			}
			ph.Row(i, got)
			for q, h := range half[i*k : (i+1)*k] {
				if got[q] != math.Float32frombits(uint32(h)<<16) {
					t.Fatalf("%s bf16 row %d[%d]: %v, want bits %#x", kn.name, i, q, got[q], h)
				}
			}
		}
	}
}

// BenchmarkMatMulTAdd compares the backward pass's product read from W's own packing
// (MatMulTAdd) with the same product on a second, transposed packing (MatMulAdd), on the
// shapes of a 0.5B model's LoRA backward pass in bfloat16: the MLP's down and fused gate/up
// projections and a chunk of the tied head's rows.
func BenchmarkMatMulTAdd(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, s := range []struct{ m, n, k int }{{800, 896, 4864}, {800, 9728, 896}, {216, 151936, 896}} {
		half := make([]uint16, s.n*s.k)
		for i := range half {
			half[i] = uint16(math.Float32bits(float32(r.NormFloat64())) >> 16)
		}
		halfT := make([]uint16, len(half))
		for i := 0; i < s.n; i++ {
			for j := 0; j < s.k; j++ {
				halfT[j*s.n+i] = half[i*s.k+j]
			}
		}
		p, pT := PackRowsBF16([][]uint16{half}, s.k), PackRowsBF16([][]uint16{halfT}, s.n)
		a, c := randSlice(r, s.m*s.n), make([]float32, s.m*s.k)
		for _, v := range []struct {
			name string
			mul  func()
		}{{"transposed-packing", func() { MatMulAdd(c, a, s.m, pT) }}, {"read-transposed", func() { MatMulTAdd(c, a, s.m, p) }}} {
			b.Run(fmt.Sprintf("%s/%dx%dx%d", v.name, s.m, s.n, s.k), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					v.mul()
				}
				b.ReportMetric(float64(2*s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
