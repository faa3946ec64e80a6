//go:build !amd64

package cpu

func fmaLoop(int) float64 { return 0 }
