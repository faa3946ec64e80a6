package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

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
// previous checkpoint intact and never a half-written one behind "latest". Only the newest
// keep checkpoints are kept.
// extra files (name -> JSON value) are written into the same checkpoint, so state kept by a
// caller (the cycle's demonstration pool) is saved atomically with the weights.
func (t *Trainer) SaveCheckpoint(dir string, st State, keep int, extra map[string]any) error {
	name := fmt.Sprintf("step-%08d", st.Step)
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
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	syncDir(dir)
	if err := hf.WriteFileAtomic(filepath.Join(dir, latestFile), func(w io.Writer) error {
		_, err := io.WriteString(w, name+"\n")
		return err
	}); err != nil {
		return err
	}
	return prune(dir, keep)
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
	b, err := os.ReadFile(filepath.Join(dir, latestFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, "", false, nil
	}
	if err != nil {
		return st, "", false, err
	}
	ck = filepath.Join(dir, strings.TrimSpace(string(b)))
	params, err := hf.ReadSafetensors(filepath.Join(ck, "params.safetensors"))
	if err != nil {
		return st, ck, false, err
	}
	moments, err := hf.ReadSafetensors(filepath.Join(ck, "optimizer.safetensors"))
	if err != nil {
		return st, ck, false, err
	}
	sb, err := os.ReadFile(filepath.Join(ck, "state.json"))
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
	t.accumulated, t.micro = 0, 0
	return st, ck, true, nil
}

// ReadJSON reads a JSON file written with a checkpoint.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
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
	return hf.WriteFileAtomic(path, func(w io.Writer) error {
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

// prune removes all but the newest keep checkpoints, and leftovers of interrupted saves.
func prune(dir string, keep int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var done []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, "step-") && strings.HasSuffix(n, ".tmp"):
			os.RemoveAll(filepath.Join(dir, n))
		case strings.HasPrefix(n, "step-") && e.IsDir():
			done = append(done, n)
		}
	}
	sort.Strings(done)
	for keep > 0 && len(done) > keep {
		if err := os.RemoveAll(filepath.Join(dir, done[0])); err != nil {
			return err
		}
		done = done[1:]
	}
	return nil
}
