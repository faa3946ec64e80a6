package cpu

//go:noescape
func fmaAVX512(n int)

//go:noescape
func fmaAVX2(n int)

// fmaLoop runs n iterations of the widest register-only FMA loop and returns the FLOPs done.
func fmaLoop(n int) float64 {
	switch best.name {
	case "avx512", "avx512bf16":
		fmaAVX512(n)
		return float64(n) * 16 * 16 * 2
	case "avx2":
		fmaAVX2(n)
		return float64(n) * 12 * 8 * 2
	}
	return 0
}
