package hf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/cpu"
)

func TestDTypesRoundTrip(t *testing.T) {
	vals := []float32{0, 1, -2.5, 3.140625, 1e-3, 65504, -0.0001}
	for _, dt := range []DType{F32, BF16, F16} {
		p := filepath.Join(t.TempDir(), "x.safetensors")
		in := map[string]*Tensor{"a": {Shape: []int{len(vals)}, Stored: dt, Data: vals}}
		if err := WriteSafetensors(p, in, nil); err != nil {
			t.Fatal(err)
		}
		out, err := ReadSafetensors(p)
		if err != nil {
			t.Fatal(err)
		}
		got := out["a"]
		if got.Stored != dt {
			t.Fatalf("%s stored as %s", dt, got.Stored)
		}
		for i, v := range vals {
			tol := map[DType]float64{F32: 0, BF16: 1.0 / 128, F16: 1.0 / 1024}[dt]
			if d := float64(got.Data[i] - v); d < 0 && -d > tol*abs(v) || d > 0 && d > tol*abs(v) {
				t.Errorf("%s: %v read back as %v", dt, v, got.Data[i])
			}
		}
		// Writing what was read gives the same file (values are exactly representable now).
		p2 := filepath.Join(t.TempDir(), "y.safetensors")
		if err := WriteSafetensors(p2, out, nil); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(p)
		b, _ := os.ReadFile(p2)
		if string(a) != string(b) {
			t.Fatalf("%s: rewrite is not byte-identical", dt)
		}
	}
	if cpu.RoundBF16(1.00390625) != 0x3f80 || cpu.RoundBF16(1.01171875) != 0x3f82 {
		t.Fatal("bf16 rounding is not round-to-nearest-even")
	}
}

func abs(v float32) float64 {
	if v < 0 {
		return float64(-v)
	}
	return float64(v)
}

func writeRaw(t *testing.T, header string, data []byte) string {
	p := filepath.Join(t.TempDir(), "model.safetensors")
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	b := append(append(n[:], header...), data...)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadSafetensors(t *testing.T) {
	cases := []struct {
		name, header string
		data         []byte
		want         []string
	}{
		{"dtype", `{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}`, make([]byte, 16), []string{`"w"`, "I64"}},
		{"offsets", `{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8), []string{`"w"`, "data_offsets"}},
		{"truncated", `{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 9), []string{`"w"`, "truncated"}},
		{"json", `{"w":`, nil, []string{"JSON"}},
		{"negative dim", `{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,-4]}}`, make([]byte, 8), []string{`"w"`, "negative dimension"}},
		{"reversed offsets", `{"w":{"dtype":"F32","shape":[-1],"data_offsets":[4,0]}}`, make([]byte, 8), []string{`"w"`}},
		{"reversed offsets, empty", `{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 8), []string{`"w"`, "data_offsets"}},
		{"overflowing shape", `{"w":{"dtype":"F32","shape":[3,4611686018427387904,4],"data_offsets":[0,0]}}`, make([]byte, 8), []string{`"w"`, "data_offsets"}},
		{"huge shape", `{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, make([]byte, 8), []string{`"w"`, "data_offsets"}},
	}
	for _, c := range cases {
		p := writeRaw(t, c.header, c.data)
		_, err := ReadSafetensors(p)
		if err == nil {
			t.Fatalf("%s: no error", c.name)
		}
		for _, w := range append(c.want, p) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "short.safetensors")
	os.WriteFile(p, []byte{1, 2, 3}, 0o644)
	if _, err := ReadSafetensors(p); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("3-byte file: %v", err)
	}
}

func TestConfigRope(t *testing.T) {
	base := `"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2`
	c, err := ParseConfig([]byte(`{` + base + `,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Rope.Type != "llama3" || c.Rope.Theta != 500000 || c.Rope.Factor != 8 || c.Rope.OriginalMaxPositions != 8192 {
		t.Fatalf("transformers-4 llama3 rope: %+v", c.Rope)
	}
	c, err = ParseConfig([]byte(`{` + base + `,"rope_parameters":{"rope_theta":20000.0,"rope_type":"default"}}`))
	if err != nil || c.Rope.Theta != 20000 || c.Rope.Type != "default" {
		t.Fatalf("transformers-5 rope_parameters: %+v %v", c.Rope, err)
	}
	if c.NumKVHeads != 2 || c.HeadDim != 4 || c.EOSTokenIDs != nil {
		t.Fatalf("defaults: %+v", c)
	}
	_, err = ParseConfig([]byte(`{` + base + `,"rope_scaling":{"rope_type":"llama3","factor":8.0}}`))
	if err == nil || !strings.Contains(err.Error(), "low_freq_factor") {
		t.Fatalf("incomplete llama3 rope: %v", err)
	}
	c, err = ParseConfig([]byte(`{` + base + `,"eos_token_id":[5,7]}`))
	if err != nil || len(c.EOSTokenIDs) != 2 {
		t.Fatalf("eos list: %v %v", c.EOSTokenIDs, err)
	}
}

// TestConfigQwen3: Qwen3Config's defaults (head_dim 128 whatever the hidden size, no biases), an
// explicit head_dim, and the refusal of its per-layer sliding window.
func TestConfigQwen3(t *testing.T) {
	base := `"model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2`
	c, err := ParseConfig([]byte(`{` + base + `}`))
	if err != nil || c.HeadDim != 128 || c.AttentionBias || c.OutputBias || c.SlidingWindow != 0 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = ParseConfig([]byte(`{` + base + `,"head_dim":24,"attention_bias":true}`))
	if err != nil || c.HeadDim != 24 || !c.AttentionBias || !c.OutputBias {
		t.Fatalf("head_dim and biases: %+v %v", c, err)
	}
	_, err = ParseConfig([]byte(`{` + base + `,"use_sliding_window":true,"sliding_window":4096}`))
	if err == nil || !strings.Contains(err.Error(), "use_sliding_window") {
		t.Fatalf("sliding window: %v", err)
	}
	_, err = ParseConfig([]byte(`{"model_type":"qwen3_moe","vocab_size":10}`))
	if err == nil || !strings.Contains(err.Error(), `unsupported value "qwen3_moe"`) {
		t.Fatalf("an unsupported family: %v", err)
	}
}

// TestConfigRefusesHostileValues: values that used to give NaN scores or minutes of work
// before a refusal are refused at once, naming the field.
func TestConfigRefusesHostileValues(t *testing.T) {
	base := `"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_attention_heads":2`
	for extra, field := range map[string]string{
		`,"num_hidden_layers":1,"rope_theta":-1`:              "rope_theta",
		`,"num_hidden_layers":1,"rope_theta":0`:               "rope_theta",
		`,"num_hidden_layers":1000000`:                        "num_hidden_layers",
		`,"num_hidden_layers":1,"vocab_size":1e12`:            "vocab_size",
		`,"num_hidden_layers":1,"rms_norm_eps":-1`:            "rms_norm_eps",
		`,"num_hidden_layers":1,"head_dim":100000`:            "head_dim",
		`,"num_hidden_layers":1,"max_position_embeddings":-3`: "max_position_embeddings",
		`,"num_hidden_layers":1,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":4,"original_max_position_embeddings":8192}`: "rope_scaling",
	} {
		_, err := ParseConfig([]byte(`{` + base + extra + `}`))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want an error naming %s", extra, err, field)
		}
	}
}

// A tensor given by Source is written as the same tensor given by Data, and a Source that
// gives the wrong number of values is refused by name, the file left unwritten.
func TestWriteSafetensorsSource(t *testing.T) {
	dir := t.TempDir()
	vals := []float32{1, -2.5, 3.25, 0.5, 7, -1}
	eager := map[string]*Tensor{"w": {Shape: []int{2, 3}, Stored: BF16, Data: vals}}
	lazy := map[string]*Tensor{"w": {Shape: []int{2, 3}, Stored: BF16, Source: func() ([]float32, error) { return vals, nil }}}
	a, b := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	if err := WriteSafetensors(a, eager, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteSafetensors(b, lazy, nil); err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("a tensor written from Source differs from the same tensor written from Data")
	}
	short := map[string]*Tensor{"w": {Shape: []int{2, 3}, Source: func() ([]float32, error) { return vals[:5], nil }}}
	c := filepath.Join(dir, "c.safetensors")
	if err := WriteSafetensors(c, short, nil); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Fatalf("a short Source: %v", err)
	}
	if _, err := os.Stat(c); !os.IsNotExist(err) {
		t.Fatalf("a failed write left %s: %v", c, err)
	}
}
