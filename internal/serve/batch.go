package serve

import (
	"context"
	"time"

	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
)

// job is one row waiting for the batcher.
type job struct {
	ctx  context.Context
	row  generate.Row
	done chan result
}

type result struct {
	c   generate.Completion
	err error
}

// batcher runs rows from concurrent requests together: it takes the first waiting row, gathers
// whatever else arrives within the window (up to maxRows), and decodes them as one batch.
// With maxRows 1 every row runs alone (batching off).
type batcher struct {
	m       *model.Model
	jobs    chan job
	window  time.Duration
	maxRows int
}

func newBatcher(m *model.Model, maxRows int, window time.Duration) *batcher {
	b := &batcher{m: m, jobs: make(chan job, 1024), window: window, maxRows: max(1, maxRows)}
	go b.loop()
	return b
}

func (b *batcher) submit(ctx context.Context, row generate.Row) (generate.Completion, error) {
	j := job{ctx: ctx, row: row, done: make(chan result, 1)}
	select {
	case b.jobs <- j:
	case <-ctx.Done():
		return generate.Completion{}, ctx.Err()
	}
	select {
	case r := <-j.done:
		return r.c, r.err
	case <-ctx.Done():
		return generate.Completion{}, ctx.Err()
	}
}

func (b *batcher) loop() {
	for first := range b.jobs {
		batch := []job{first}
		timer := time.NewTimer(b.window)
	gather:
		for len(batch) < b.maxRows {
			select {
			case j, ok := <-b.jobs:
				if !ok {
					break gather
				}
				batch = append(batch, j)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		var live []job
		for _, j := range batch {
			if j.ctx.Err() == nil {
				live = append(live, j)
			}
		}
		if len(live) == 0 {
			continue
		}
		rows := make([]generate.Row, len(live))
		for i, j := range live {
			rows[i] = j.row
		}
		// The batch outlives any one request; a client that goes away just stops listening.
		comps, err := generate.Rows(context.Background(), b.m, rows)
		for i, j := range live {
			r := result{err: err}
			if err == nil {
				r.c = comps[i]
			}
			j.done <- r
		}
	}
}

func (b *batcher) close() { close(b.jobs) }
