package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/hf"
)

// State is the position of a run, saved with every checkpoint.
type State struct {
	Step     int    `json:"step"`     // optimiser steps taken
	Epoch    int    `json:"epoch"`    // current pass over the data
	Pos      int    `json:"pos"`      // examples of this epoch's order already used
	Seed     uint64 `json:"seed"`     // data-order seed
	Examples int    `json:"examples"` // dataset size, to refuse resuming on other data
}

const latestFile = "latest"

// SaveCheckpoint writes the trainable weights, the optimiser moments and st under
// dir/step-NNNNNNNN. Files go to a temporary directory that is renamed into place, and the
// "latest" pointer is replaced atomically afterwards, so a kill at any moment leaves the
// previous checkpoint intact and never a half-written one behind "latest". A step saved again
// (the same step number) goes to a new revision, step-NNNNNNNN.rK, so the checkpoint that
// "latest" names is never removed before its replacement is in place. Only the newest keep
// checkpoints are kept.
// extra files (name -> JSON value) are written into the same checkpoint, so state kept by a
// caller (the cycle's demonstration pool) is saved atomically with the weights.
func (t *Trainer) SaveCheckpoint(dir string, st State, keep int, extra map[string]any) error {
	name := fmt.Sprintf("step-%08d", st.Step)
	for rev := 2; exists(filepath.Join(dir, name)); rev++ {
		name = fmt.Sprintf("step-%08d.r%d", st.Step, rev)
	}
	final := filepath.Join(dir, name)
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := hf.WriteSafetensors(filepath.Join(tmp, "params.safetensors"), t.tensorsOf(t.params), nil); err != nil {
		return err
	}
	moments := t.tensorsOf(t.m1)
	for k, v := range t.tensorsOf(t.m2) {
		moments["m2:"+k] = v
	}
	if err := hf.WriteSafetensors(filepath.Join(tmp, "optimizer.safetensors"), moments, nil); err != nil {
		return err
	}
	if err := WriteJSON(filepath.Join(tmp, "state.json"), st); err != nil {
		return err
	}
	for name, v := range extra {
		if err := WriteJSON(filepath.Join(tmp, name), v); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	syncDir(dir)
	if err := files.WriteAtomic(filepath.Join(dir, latestFile), func(w io.Writer) error {
		_, err := io.WriteString(w, name+"\n")
		return err
	}); err != nil {
		return err
	}
	return prune(dir, keep, name)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// checkpointName matches what SaveCheckpoint writes; "latest" may name nothing else, so a
// pointer such as "../../.." cannot lead a resume outside the checkpoint directory.
var checkpointName = regexp.MustCompile(`^step-(\d{8})(?:\.r(\d+))?$`)

// checkpointOrder sorts checkpoint names by step, then revision.
func checkpointOrder(name string) [2]int {
	m := checkpointName.FindStringSubmatch(name)
	step, _ := strconv.Atoi(m[1])
	rev, _ := strconv.Atoi(m[2])
	return [2]int{step, rev}
}

// LatestCheckpoint returns the directory of the newest checkpoint under dir ("" when there is
// none). When the "latest" pointer is missing but complete checkpoints exist, it warns and
// takes the newest of them rather than silently starting over.
func LatestCheckpoint(dir string) (string, error) {
	p := filepath.Join(dir, latestFile)
	b, err := files.ReadFile(p)
	if err == nil {
		name := strings.TrimSpace(string(b))
		if !checkpointName.MatchString(name) {
			return "", fmt.Errorf("%s: %q is not a checkpoint name (want step-NNNNNNNN)", p, name)
		}
		return filepath.Join(dir, name), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	done := completeCheckpoints(dir)
	if len(done) == 0 {
		return "", nil
	}
	newest := filepath.Join(dir, done[len(done)-1])
	slog.Warn("checkpoint pointer missing; resuming from the newest complete checkpoint", "missing", p, "checkpoint", newest)
	return newest, nil
}

// completeCheckpoints lists the checkpoint directories under dir that hold a state.json,
// oldest first.
func completeCheckpoints(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var done []string
	for _, e := range entries {
		if e.IsDir() && checkpointName.MatchString(e.Name()) && exists(filepath.Join(dir, e.Name(), "state.json")) {
			done = append(done, e.Name())
		}
	}
	sort.Slice(done, func(i, j int) bool {
		a, b := checkpointOrder(done[i]), checkpointOrder(done[j])
		return a[0] < b[0] || a[0] == b[0] && a[1] < b[1]
	})
	return done
}

// tensorsOf snapshots variables as float32 tensors keyed by their parameter's key. Checkpoints
// always hold float32, so resuming is exact whatever dtype the model is exported in.
func (t *Trainer) tensorsOf(vars []*mlctx.Variable) map[string]*hf.Tensor {
	out := map[string]*hf.Tensor{}
	for i, v := range vars {
		val := v.MustValue()
		out[key(t.params[i])] = &hf.Tensor{Shape: val.Shape().Dimensions, Stored: hf.F32, Data: tensors.MustCopyFlatData[float32](val)}
	}
	return out
}

// LoadCheckpoint restores the newest checkpoint under dir and returns its directory (where
// extra files are). found is false when there is none.
func (t *Trainer) LoadCheckpoint(dir string) (st State, ck string, found bool, err error) {
	if ck, err = LatestCheckpoint(dir); err != nil || ck == "" {
		return st, "", false, err
	}
	params, err := hf.ReadSafetensors(filepath.Join(ck, "params.safetensors"))
	if err != nil {
		return st, ck, false, err
	}
	moments, err := hf.ReadSafetensors(filepath.Join(ck, "optimizer.safetensors"))
	if err != nil {
		return st, ck, false, err
	}
	sb, err := files.ReadFile(filepath.Join(ck, "state.json"))
	if err != nil {
		return st, ck, false, err
	}
	if err := json.Unmarshal(sb, &st); err != nil {
		return st, ck, false, fmt.Errorf("%s: %w", filepath.Join(ck, "state.json"), err)
	}
	for i, p := range t.params {
		k := key(p)
		for _, x := range []struct {
			v   *mlctx.Variable
			src map[string]*hf.Tensor
			k   string
		}{{p, params, k}, {t.m1[i], moments, k}, {t.m2[i], moments, "m2:" + k}} {
			ts, ok := x.src[x.k]
			if !ok || !slices.Equal(ts.Shape, p.Shape().Dimensions) {
				return st, ck, false, fmt.Errorf("%s: tensor %q missing or of another shape: the checkpoint is not of this model", ck, x.k)
			}
			if err := x.v.SetValue(tensors.FromFlatDataAndDimensions(ts.Data, ts.Shape...)); err != nil {
				return st, ck, false, err
			}
		}
	}
	t.Step = st.Step
	t.accumulated, t.micro, t.grads = 0, 0, nil
	return st, ck, true, nil
}

// ReadJSON reads a JSON file written with a checkpoint.
func ReadJSON(path string, v any) error {
	b, err := files.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// WriteJSON writes v as indented JSON, atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return files.WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// prune removes all but the newest keep checkpoints (never live, the one "latest" names), and
// leftovers of interrupted saves: step-*.tmp directories and the pointer's temporary files.
func prune(dir string, keep int, live string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "step-") && strings.HasSuffix(n, ".tmp") || strings.HasPrefix(n, "."+latestFile+".tmp") {
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
	done := completeCheckpoints(dir)
	for keep > 0 && len(done) > keep {
		if done[0] != live {
			if err := os.RemoveAll(filepath.Join(dir, done[0])); err != nil {
				return err
			}
		}
		done = done[1:]
	}
	return nil
}
