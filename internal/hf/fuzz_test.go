package hf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSafetensors: any bytes either parse into tensors whose data matches their shapes or are
// refused with an error; never a panic or an allocation beyond the input's size.
func FuzzSafetensors(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tiny-llama-metaspace", "model.safetensors"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good[:min(len(good), 4096)])
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := readSafetensors(bytes.NewReader(b), int64(len(b)), "fuzz", len(b)%2 == 0)
		if err != nil {
			return
		}
		for name, x := range ts {
			n := len(x.Data) + len(x.BF16)
			if n != x.NumElements() || n > len(b) || x.Data != nil && x.BF16 != nil {
				t.Fatalf("%s: %d values for shape %v from %d bytes", name, n, x.Shape, len(b))
			}
		}
	})
}

// FuzzConfig: a config that parses has every size positive and within its bound, and rope
// frequencies that are finite.
func FuzzConfig(f *testing.F) {
	for _, dir := range []string{"tiny-llama-metaspace", "tiny-gpt2-bytelevel"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", dir, "config.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if c.VocabSize <= 0 || c.HiddenSize <= 0 || c.NumLayers <= 0 || c.NumLayers > 1<<10 || c.HeadDim <= 0 || c.MaxPositions <= 0 ||
			c.NumKVHeads <= 0 || c.NumHeads%c.NumKVHeads != 0 {
			t.Fatalf("accepted an unusable config: %+v", c)
		}
		if c.ModelType != "gpt2" && !(c.Rope.Theta > 1) {
			t.Fatalf("accepted rope_theta %v", c.Rope.Theta)
		}
	})
}
