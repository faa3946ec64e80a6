package cpu

import (
	"runtime"
	"sync"
	"time"
)

// PeakGFLOPS measures the float32 FMA ceiling of all cores (GOMAXPROCS goroutines running a
// register-only FMA loop of the kernel's width) for about d. It is 0 where no assembly
// kernel runs.
func PeakGFLOPS(d time.Duration) float64 {
	workers := runtime.GOMAXPROCS(0)
	flops := make([]float64, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range flops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
				flops[w] += fmaLoop(1 << 20)
			}
		}()
	}
	wg.Wait()
	total := 0.0
	for _, f := range flops {
		total += f
	}
	return total / time.Since(start).Seconds() / 1e9
}
