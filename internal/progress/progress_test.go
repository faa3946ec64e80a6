package progress

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotATerminalLogsPlainLines: written to a file, progress is plain log lines with an ETA
// (never a carriage return), at most every LogEvery.
func TestNotATerminalLogsPlainLines(t *testing.T) {
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)
	defer func(e time.Duration) { LogEvery = e }(LogEvery)
	LogEvery = 0
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := New(f, 4, "align")
	time.Sleep(20 * time.Millisecond)
	b.Set(0.5, "step 1: generating") // half of the first step: the ETA already counts
	b.Log(func() { slog.Warn("a warning") })
	b.Set(4, "done")
	b.Finish()
	out := logs.String()
	if strings.Contains(out, "\r") {
		t.Fatalf("carriage returns in a log file: %q", out)
	}
	first, _, _ := strings.Cut(out, "\n")
	if !strings.Contains(first, `done=0.5/4`) || !strings.Contains(first, `now="step 1: generating"`) || !strings.Contains(first, "eta=") || strings.Contains(first, "eta=0s") {
		t.Fatalf("progress lines: %s", out)
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatal("the bar wrote into the file")
	}
	var nilBar *Bar
	nilBar.Set(1, "x") // a job without a display
	nilBar.Finish()
}
