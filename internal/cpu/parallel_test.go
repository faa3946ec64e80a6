package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestParallelCoversOnce: every index of [0,n) is handed out exactly once, in contiguous
// shares, whether the pool runs the call, a call from inside a share (the pool is busy) runs
// it, several goroutines call at once, or GOMAXPROCS changed since the pool was made.
func TestParallelCoversOnce(t *testing.T) {
	check := func(n int, inner bool) {
		seen := make([]atomic.Int32, n)
		Parallel(n, func(lo, hi int) {
			if lo >= hi {
				t.Errorf("n=%d: empty share [%d,%d)", n, lo, hi)
			}
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
			if inner {
				sub := make([]atomic.Int32, 7)
				Parallel(7, func(a, b int) {
					for i := a; i < b; i++ {
						sub[i].Add(1)
					}
				})
				for i := range sub {
					if sub[i].Load() != 1 {
						t.Errorf("nested call: index %d handed out %d times", i, sub[i].Load())
					}
				}
			}
		})
		for i := range seen {
			if c := seen[i].Load(); c != 1 {
				t.Fatalf("n=%d: index %d handed out %d times", n, i, c)
			}
		}
	}
	for _, n := range []int{1, 2, 3, 17, 1000} {
		check(n, false)
		check(n, true)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				check(1+i%37, i%5 == 0)
			}
		}()
	}
	wg.Wait()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	check(100, true)
	runtime.GOMAXPROCS(1)
	check(5, false)
}
