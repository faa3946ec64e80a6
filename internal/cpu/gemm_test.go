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

// BenchmarkMatMul reports GFLOP/s of each kernel on the bench model's shapes: a scoring batch
// (2048 rows) and a decoding step (16 rows).
func BenchmarkMatMul(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, kn := range kernels() {
		for _, s := range []struct{ m, n, k int }{{2048, 256, 256}, {2048, 688, 256}, {16, 8192, 256}, {16, 688, 256}} {
			b.Run(fmt.Sprintf("%s/%dx%dx%d", kn.name, s.m, s.n, s.k), func(b *testing.B) {
				a, w := randSlice(r, s.m*s.k), randSlice(r, s.n*s.k)
				p := packWith(kn, rowsOf([][]float32{w}, s.k), s.k)
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
// concatenated matrix, both ways round.
func TestPackRowsEqualsConcatenation(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	k := 70
	blocks := [][]float32{randSlice(r, 33*k), randSlice(r, 5*k), randSlice(r, 17*k)}
	var cat []float32
	for _, b := range blocks {
		cat = append(cat, b...)
	}
	n := len(cat) / k
	for _, pair := range [][2]*Packed{{PackRows(blocks, k), Pack(cat, n, k)}, {PackRowsTransposed(blocks, k), PackTransposed(cat, n, k)}} {
		a, b := pair[0], pair[1]
		if a.N != b.N || a.K != b.K || !slices.Equal(a.data, b.data) {
			t.Fatalf("packings differ: %dx%d vs %dx%d", a.N, a.K, b.N, b.K)
		}
	}
}
