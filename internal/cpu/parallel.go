package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Parallel runs fn over [0,n) split into one contiguous range per core.
//
// A decode step of one row runs about five such regions a layer, each a few tens of
// microseconds, and waking a parked goroutine costs about as much. So the workers stay:
// after a region they spin for spinFor, yielding their processor to any other goroutine,
// before they park; the caller takes shares too. A call made while the pool is busy (from
// another goroutine, or from inside fn) runs each share on a goroutine of its own.
func Parallel(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		fn(0, n)
		return
	}
	if p := thePool.get(); p != nil {
		p.run(n, workers, fn)
		thePool.put()
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// spinFor is how long an idle worker looks for the next region before it parks.
const spinFor = 200 * time.Microsecond

// poolSlot hands the one pool to one caller at a time, and makes a new one when GOMAXPROCS
// has changed.
type poolSlot struct {
	mu   sync.Mutex
	busy bool
	p    *pool
}

var thePool poolSlot

func (s *poolSlot) get() *pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		return nil
	}
	if procs := runtime.GOMAXPROCS(0); s.p == nil || len(s.p.wake)+1 != procs {
		if s.p != nil {
			s.p.stop()
		}
		s.p = newPool(procs - 1)
	}
	s.busy = true
	return s.p
}

func (s *poolSlot) put() {
	s.mu.Lock()
	s.busy = false
	s.mu.Unlock()
}

// pool is a set of worker goroutines that take shares of the current job.
type pool struct {
	gen    atomic.Uint64 // bumped for each job; workers watch it
	job    atomic.Pointer[job]
	parked []atomic.Bool
	wake   []chan struct{}
	quit   atomic.Bool
}

type job struct {
	fn      func(lo, hi int)
	n       int
	shares  int
	next    atomic.Int32 // the next share to take
	pending atomic.Int32 // shares not yet finished
}

func newPool(workers int) *pool {
	p := &pool{parked: make([]atomic.Bool, workers), wake: make([]chan struct{}, workers)}
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		go p.work(i)
	}
	return p
}

func (p *pool) stop() {
	p.quit.Store(true)
	p.wakeParked()
}

// wakeParked wakes every parked worker (each flag taken by one waker only).
func (p *pool) wakeParked() {
	for i := range p.wake {
		if p.parked[i].CompareAndSwap(true, false) {
			p.wake[i] <- struct{}{}
		}
	}
}

func (p *pool) run(n, shares int, fn func(lo, hi int)) {
	j := &job{fn: fn, n: n, shares: shares}
	j.pending.Store(int32(shares))
	p.job.Store(j)
	p.gen.Add(1)
	p.wakeParked()
	j.take()
	for spins := 0; j.pending.Load() > 0; spins++ {
		if spins > 64 {
			runtime.Gosched()
		}
	}
	p.job.Store(nil)
}

// take runs shares of j until none is left.
func (j *job) take() {
	for {
		s := int(j.next.Add(1)) - 1
		if s >= j.shares {
			return
		}
		j.fn(j.n*s/j.shares, j.n*(s+1)/j.shares)
		j.pending.Add(-1)
	}
}

func (p *pool) work(i int) {
	seen := p.gen.Load()
	for !p.quit.Load() {
		deadline := time.Now().Add(spinFor)
		for spins := 0; p.gen.Load() == seen; spins++ {
			if spins&63 == 63 {
				if p.quit.Load() {
					return
				}
				if time.Now().After(deadline) {
					p.parked[i].Store(true)
					if p.gen.Load() != seen && p.parked[i].CompareAndSwap(true, false) {
						break // a job came before any caller saw this worker parked
					}
					<-p.wake[i] // no job yet, or a caller took the flag and is sending
					break
				}
				runtime.Gosched()
			}
		}
		seen = p.gen.Load()
		if j := p.job.Load(); j != nil {
			j.take()
		}
	}
}
