//go:build !amd64

package cpu

func pickKernel() kernel { return goKernel }

func kernels() []kernel { return []kernel{goKernel} }
