package model

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// On a compiling backend a LoRA model keeps its frozen bf16 base in bf16 (half the memory) and
// multiplies in bf16 with float32 accumulation: log-probs close to float32 products of the same
// weights, the same tensors saved, and float32 again once the adapter is merged. Checked on
// simplego with the policy forced, on the graph engine XLA runs.
func TestFrozenBF16Base(t *testing.T) {
	lora := LoRA{R: 2, Alpha: 4, Targets: []string{"q", "v"}}
	build := func(keep bool) *Model {
		m, _ := loadRef(t, "tiny-llama-metaspace")
		if err := m.SetEngine("gomlx"); err != nil {
			t.Fatal(err)
		}
		m.coarse = keep
		for _, n := range m.names { // as if the checkpoint were saved in bf16
			m.stored[n] = hf.BF16
			v := m.Variable(n)
			data, _ := floatData(v.MustValue())
			for i, x := range data {
				data[i] = bfloat16.FromFloat32(x).Float32()
			}
			v.MustSetValue(tensors.FromFlatDataAndDimensions(data, v.Shape().Dimensions...))
		}
		if err := m.AddLoRA(lora, 5); err != nil {
			t.Fatal(err)
		}
		return m
	}
	kept, ref := build(true), build(false)
	var bf16Bytes, f32Bytes uintptr
	for _, n := range kept.names {
		if kept.Variable(n).DType() != dtypes.BFloat16 || ref.Variable(n).DType() != dtypes.Float32 {
			t.Fatalf("%s: kept as %s, reference %s", n, kept.Variable(n).DType(), ref.Variable(n).DType())
		}
		bf16Bytes += kept.Variable(n).MustValue().Memory()
		f32Bytes += ref.Variable(n).MustValue().Memory()
	}
	if 2*bf16Bytes != f32Bytes {
		t.Fatalf("base weights take %d bytes in bf16, %d in float32", bf16Bytes, f32Bytes)
	}
	seqs := [][]int{{5, 9, 2, 7, 1}, {3, 8, 2, 6, 4, 9, 1}}
	a, err := kept.LogProbs(context.Background(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ref.LogProbs(context.Background(), seqs)
	// The linear layers multiply in bf16 (float32 accumulation, the product rounded to bf16):
	// close to float32 products of the same weights, and not equal to them.
	maxDiff := 0.0
	for i := range a {
		for j := range a[i] {
			maxDiff = max(maxDiff, math.Abs(float64(a[i][j]-b[i][j])))
		}
	}
	if maxDiff > 0.05 || maxDiff == 0 {
		t.Fatalf("log-probs with bf16 products differ from float32 ones by up to %v; want (0, 0.05]", maxDiff)
	}
	dir := filepath.Join(t.TempDir(), "saved")
	if err := kept.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := hf.ReadModelTensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ref.Tensors()
	for n, x := range want {
		for i := range x.Data {
			if got[n].Data[i] != x.Data[i] {
				t.Fatalf("saved %s[%d] = %v, want %v", n, i, got[n].Data[i], x.Data[i])
			}
		}
	}
	if err := kept.MergeLoRA(); err != nil {
		t.Fatal(err)
	}
	for _, n := range kept.names {
		if v := kept.Variable(n); v.DType() != dtypes.Float32 || !v.Trainable {
			t.Fatalf("%s after merging: %s, trainable %v", n, v.DType(), v.Trainable)
		}
	}
}
