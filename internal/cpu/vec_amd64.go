package cpu

import "golang.org/x/sys/cpu"

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func axpyAVX2(alpha float32, x, y *float32, n int)

// hasAVX2 turns the vector helpers on; the "go" kernel (forced or not) turns them off too.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && best.name != "go"

// Dot is Σ a[i]·b[i] over len(a) elements.
func Dot(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	var s float32
	if hasAVX2 && n >= 8 {
		m := n &^ 7
		s = dotAVX2(&a[0], &b[0], m)
		a, b = a[m:], b[m:]
	}
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// Axpy adds alpha·x to y elementwise (len(x) elements).
func Axpy(alpha float32, x, y []float32) {
	n := len(x)
	y = y[:n]
	if hasAVX2 && n >= 8 {
		m := n &^ 7
		axpyAVX2(alpha, &x[0], &y[0], m)
		x, y = x[m:], y[m:]
	}
	for i, v := range x {
		y[i] += alpha * v
	}
}
