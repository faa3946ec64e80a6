package cpu

import "golang.org/x/sys/cpu"

//go:noescape
func tileAVX2(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)

//go:noescape
func tileAVX512(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)

var (
	avx2Kernel   = kernel{name: "avx2", mr: 6, nr: 16, fn: tileAVX2}
	avx512Kernel = kernel{name: "avx512", mr: 8, nr: 32, fn: tileAVX512}
)

func pickKernel() kernel {
	switch {
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
	return out
}
