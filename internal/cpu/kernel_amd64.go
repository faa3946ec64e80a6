package cpu

import "golang.org/x/sys/cpu"

//go:noescape
func tileAVX2(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)

//go:noescape
func tileAVX512(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)

//go:noescape
func tileAVX2BF16(k int, a *float32, lda int, b *uint16, c *float32, ldc int, acc int)

//go:noescape
func tileAVX512BF16(k int, a *float32, lda int, b *uint16, c *float32, ldc int, acc int)

//go:noescape
func rowAVX2(k int, a *float32, b *float32, c *float32, acc int)

//go:noescape
func rowAVX2BF16(k int, a *float32, b *uint16, c *float32, acc int)

//go:noescape
func rowAVX512(k int, a *float32, b *float32, c *float32, acc int)

//go:noescape
func rowAVX512BF16(k int, a *float32, b *uint16, c *float32, acc int)

//go:noescape
func tileAVX512DP(k2 int, a *uint32, lda int, b *uint16, c *float32, ldc int, acc int)

//go:noescape
func rowAVX512DP(k2 int, a *uint32, b *uint16, c *float32, acc int)

var (
	avx2Kernel       = kernel{name: "avx2", mr: 6, nr: 16, fn: tileAVX2, bf16: tileAVX2BF16, row: rowAVX2, rowBF16: rowAVX2BF16}
	avx512Kernel     = avx512()
	avx512bf16Kernel = avx512bf16()
)

// avx512bf16 is the AVX-512 kernel that multiplies bf16 weights in pairs (VDPBF16PS) instead
// of widening them.
func avx512bf16() kernel {
	k := avx512()
	k.name = "avx512bf16"
	k.bf16, k.rowBF16 = nil, nil
	k.dpTile, k.dpRow = tileAVX512DP, rowAVX512DP
	return k
}

// avx512 is the AVX-512 kernel; widening 16-bit lanes (its bf16 tiles) takes AVX512BW.
func avx512() kernel {
	k := kernel{name: "avx512", mr: 8, nr: 32, fn: tileAVX512, bf16: tileAVX512BF16, row: rowAVX512, rowBF16: rowAVX512BF16}
	if !cpu.X86.HasAVX512BW {
		k.bf16, k.rowBF16 = tileGoBF16(8, 32), nil
	}
	return k
}

func pickKernel() kernel {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BF16:
		return avx512bf16Kernel
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL:
		return avx512Kernel
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return avx2Kernel
	}
	return goKernel
}

// kernels lists every kernel this CPU can run, for tests and benchmarks.
func kernels() []kernel {
	out := []kernel{goKernel}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		out = append(out, avx2Kernel)
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL {
		out = append(out, avx512Kernel)
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BF16 {
		out = append(out, avx512bf16Kernel)
	}
	return out
}
