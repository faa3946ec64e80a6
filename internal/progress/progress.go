// Package progress shows how far a long job has come and when it will end: a live bar with an
// ETA on a terminal, and elsewhere (a log file, CI) a plain log line now and then, so that no
// carriage-return junk reaches files. Work may advance by fractions of a unit, so the ETA is
// real during the first unit too.
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// scale turns fractional units into the bar's integer counts.
const scale = 1000

// LogEvery is how often a job that is not on a terminal logs its progress.
var LogEvery = 15 * time.Second

// Bar tracks one job. The zero of *Bar (nil) is valid and shows nothing.
type Bar struct {
	mu      sync.Mutex
	job     string
	total   float64
	done    float64
	desc    string
	start   time.Time
	lastLog time.Time
	live    *progressbar.ProgressBar // nil when w is not a terminal
}

// New starts a job of total units, shown on w (nil: nowhere).
func New(w io.Writer, total int, job string) *Bar {
	if w == nil {
		return nil
	}
	b := &Bar{job: job, total: float64(total), start: time.Now()}
	b.lastLog = b.start
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.live = progressbar.NewOptions(total*scale, progressbar.OptionSetWriter(w), progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionSetWidth(20), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetDescription(job))
	}
	return b
}

// Set records that done units (fractions allowed) are finished, with what is going on now.
func (b *Bar) Set(done float64, now string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done, b.desc = min(done, b.total), now
	if b.live != nil {
		b.live.Describe(fmt.Sprintf("%s: %s", b.job, now))
		b.live.Set(int(b.done * scale))
		return
	}
	if time.Since(b.lastLog) >= LogEvery {
		b.lastLog = time.Now()
		slog.Info(b.job, "done", fmt.Sprintf("%.1f/%.0f", b.done, b.total), "now", now, "eta", b.eta().Round(100*time.Millisecond))
	}
}

// eta is the remaining time at the rate so far.
func (b *Bar) eta() time.Duration {
	if b.done <= 0 {
		return 0
	}
	el := time.Since(b.start)
	return time.Duration(float64(el) * (b.total - b.done) / b.done)
}

// Log prints a log line without gluing it to a live bar.
func (b *Bar) Log(fn func()) {
	if b == nil || b.live == nil {
		fn()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live.Clear()
	fn()
}

// Finish ends the bar (on a terminal, with a newline after it).
func (b *Bar) Finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.live != nil {
		b.live.Finish()
		fmt.Fprintln(os.Stderr)
		return
	}
	slog.Info(b.job, "done", fmt.Sprintf("%.1f/%.0f", b.done, b.total), "took", time.Since(b.start).Round(time.Second))
}

// Live reports whether the bar is drawn on a terminal (else progress goes to the log).
func (b *Bar) Live() bool { return b != nil && b.live != nil }
