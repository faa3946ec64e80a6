package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/lockfile"
	"github.com/cyclealign/cyclealign/internal/progress"
)

// RunOptions drive offline training on ranked data.
type RunOptions struct {
	Epochs    int    // passes over the data
	MaxSteps  int    // stop after this many optimiser steps in all (0: Epochs decides)
	BatchSize int    // examples per optimiser step
	GradAccum int    // micro-batches per step (BatchSize is split among them)
	Seed      uint64 // data order
	SaveEvery int    // checkpoint every N steps (0: only at the end)
	Keep      int    // checkpoints kept
	Out       string // run directory: checkpoints/, metrics.jsonl
	Progress  io.Writer
	// StopAfter ends the run after this many steps of this call, as a kill would, with the
	// checkpoint of SaveEvery as the only record; tests use it. 0: off.
	StopAfter int
}

// Metrics is one line of metrics.jsonl.
type Metrics struct {
	Step         int     `json:"step"`
	Epoch        int     `json:"epoch"`
	Loss         float64 `json:"loss"`
	RankTerm     float64 `json:"rank_term"`
	SFTTerm      float64 `json:"sft_term"`
	GradNorm     float64 `json:"grad_norm"`
	LR           float64 `json:"lr"`
	Tokens       int     `json:"tokens"`
	TokensPerSec float64 `json:"tokens_per_s"`
	Seconds      float64 `json:"seconds"`
}

// TotalSteps is the number of optimiser steps the options imply for n examples (Run refuses a
// batch size under 1).
func (o RunOptions) TotalSteps(n int) int {
	b := max(1, o.BatchSize)
	per := (n + b - 1) / b
	total := per * max(1, o.Epochs)
	if o.MaxSteps > 0 {
		total = min(total, o.MaxSteps)
	}
	return total
}

func order(n int, seed uint64, epoch int) []int {
	return rand.New(rand.NewPCG(seed, uint64(epoch))).Perm(n)
}

// Run trains on data, resuming from o.Out/checkpoints when a checkpoint is there. On
// cancellation it saves a checkpoint at the last completed step before returning.
func Run(ctx context.Context, t *Trainer, data []Example, o RunOptions) ([]Metrics, error) {
	switch {
	case o.BatchSize < 1 || o.GradAccum < 1 || o.GradAccum > o.BatchSize:
		return nil, fmt.Errorf("batch size %d and gradient accumulation %d: need 1 <= accumulation <= batch size", o.BatchSize, o.GradAccum)
	case o.Epochs < 1 || o.MaxSteps < 0:
		return nil, fmt.Errorf("epochs %d and max steps %d: need at least 1 epoch (max steps 0: the epochs decide)", o.Epochs, o.MaxSteps)
	case !(t.Opt.LR > 0) || t.Opt.ClipNorm < 0 || t.Opt.WeightDecay < 0:
		return nil, fmt.Errorf("learning rate %g, clip %g, weight decay %g: need a learning rate above 0, and clip and weight decay at least 0", t.Opt.LR, t.Opt.ClipNorm, t.Opt.WeightDecay)
	}
	lock, err := lockfile.Acquire(o.Out)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	ckdir := filepath.Join(o.Out, "checkpoints")
	if err := os.MkdirAll(ckdir, 0o755); err != nil {
		return nil, err
	}
	st := State{Seed: o.Seed, Examples: len(data)}
	if got, _, found, err := t.LoadCheckpoint(ckdir); err != nil {
		return nil, err
	} else if found {
		if got.Examples != len(data) || got.Seed != o.Seed {
			return nil, fmt.Errorf("%s: checkpoint was made on %d examples with seed %d, this run has %d with seed %d", ckdir, got.Examples, got.Seed, len(data), o.Seed)
		}
		st = got
		slog.Info("resuming", "checkpoint", ckdir, "step", st.Step)
	}
	metricsPath := filepath.Join(o.Out, "metrics.jsonl")
	firstSave := o.SaveEvery
	if firstSave <= 0 {
		firstSave = o.TotalSteps(len(data))
	}
	if err := RefuseOrphanRecords(ckdir, st.Step, firstSave, metricsPath); err != nil {
		return nil, err
	}
	if err := TruncateJSONL(metricsPath, "step", st.Step); err != nil {
		return nil, err
	}
	mf, err := os.OpenFile(metricsPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	total := o.TotalSteps(len(data))
	bar := progress.New(o.Progress, total, "train")
	bar.Set(float64(st.Step), "starting")
	save := func() error { return t.SaveCheckpoint(ckdir, st, o.Keep, nil) }
	var out []Metrics
	perm := order(len(data), o.Seed, st.Epoch)
	done := 0
	for st.Step < total {
		if err := ctx.Err(); err != nil {
			if serr := save(); serr != nil {
				return out, errors.Join(err, serr)
			}
			return out, err
		}
		if st.Pos >= len(data) {
			st.Epoch, st.Pos = st.Epoch+1, 0
			perm = order(len(data), o.Seed, st.Epoch)
		}
		end := min(st.Pos+o.BatchSize, len(data))
		var exs []Example
		for _, i := range perm[st.Pos:end] {
			exs = append(exs, data[i])
		}
		start := time.Now()
		m := Metrics{Step: st.Step + 1, Epoch: st.Epoch, LR: t.Opt.LRAt(st.Step)}
		s, err := t.AccumulateIn(ctx, exs, o.GradAccum)
		if err != nil {
			return out, err
		}
		m.Loss, m.RankTerm, m.SFTTerm, m.Tokens = s.Loss, s.Rank, s.SFT, s.Tokens
		n := float64(len(exs))
		m.Loss, m.RankTerm, m.SFTTerm = m.Loss/n, m.RankTerm/n, m.SFTTerm/n
		if m.GradNorm, err = t.Apply(); err != nil {
			return out, err
		}
		m.Seconds = time.Since(start).Seconds()
		m.TokensPerSec = float64(m.Tokens) / m.Seconds
		st.Step, st.Pos = st.Step+1, end
		out = append(out, m)
		line, _ := json.Marshal(m)
		if _, err := mf.Write(append(line, '\n')); err != nil {
			return out, err
		}
		bar.Set(float64(st.Step), fmt.Sprintf("loss %.4f  %.0f tok/s", m.Loss, m.TokensPerSec))
		if o.SaveEvery > 0 && st.Step%o.SaveEvery == 0 && st.Step < total {
			if err := save(); err != nil {
				return out, err
			}
		}
		if done++; o.StopAfter > 0 && done >= o.StopAfter {
			return out, nil
		}
	}
	bar.Finish()
	return out, save()
}

// TruncateJSONL keeps the lines of a JSONL file whose numeric field is at most limit, so a
// resumed run rewrites what came after its checkpoint. A last line cut short by a kill is
// dropped with a warning; an unreadable line before the last is an error naming the file and
// line, since dropping it would lose a record silently.
func TruncateJSONL(path, field string, limit int) error {
	if !exists(path) {
		return nil
	}
	lines, err := readJSONL(path)
	if err != nil {
		return err
	}
	var keep [][]byte
	for _, l := range lines {
		if v, ok := l.rec[field].(float64); ok && int(v) <= limit {
			keep = append(keep, l.raw)
		}
	}
	return files.WriteAtomic(path, func(w io.Writer) error {
		for _, l := range keep {
			if _, err := w.Write(append(l, '\n')); err != nil {
				return err
			}
		}
		return nil
	})
}

type jsonlLine struct {
	raw []byte
	rec map[string]any
}

func readJSONL(path string) ([]jsonlLine, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []jsonlLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	bad := 0 // line number of an unreadable line not yet known to be the last
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if bad > 0 {
			return nil, fmt.Errorf("%s:%d: corrupt record (not JSON) before the end of the file; repair or remove that line to resume", path, bad)
		}
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			bad = n
			continue
		}
		out = append(out, jsonlLine{raw: append([]byte(nil), sc.Bytes()...), rec: rec})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if bad > 0 {
		slog.Warn("dropping a record cut short by an interruption", "file", path, "line", bad)
	}
	return out, nil
}

// RefuseOrphanRecords stops a resume that found no checkpoint (step 0) while files hold
// records of a step after the first checkpointed one (saveEvery): a step's records are written
// before its checkpoint, so only a later step's prove that a checkpoint was made and lost, and
// starting over would silently overwrite them. A run killed before or during its first
// checkpointed step restarts as usual.
func RefuseOrphanRecords(ckdir string, step, saveEvery int, files ...string) error {
	if step > 0 {
		return nil
	}
	for _, f := range files {
		lines, err := readJSONL(f)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if v, ok := l.rec["step"].(float64); ok && int(v) > max(1, saveEvery) {
				return fmt.Errorf("%s holds records up to step %d but %s has no checkpoint to resume from: restore the checkpoints, or move the file away to start over", f, int(v), ckdir)
			}
		}
	}
	return nil
}
