package bench

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// ggufFile is what TestConvertGGUF reads back: metadata values and tensors by name.
type ggufFile struct {
	meta    map[string]any
	tensors map[string]ggufTensor
}

type ggufTensor struct {
	dims  []uint64 // fastest-varying first
	dtype uint32
	data  []byte
}

// readGGUF parses a GGUF v3 file as the format's specification lays it out (ggml's
// docs/gguf.md), independently of the writer.
func readGGUF(t *testing.T, path string) *ggufFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	u32 := func() uint32 { v := binary.LittleEndian.Uint32(b[off:]); off += 4; return v }
	u64 := func() uint64 { v := binary.LittleEndian.Uint64(b[off:]); off += 8; return v }
	str := func() string { n := int(u64()); s := string(b[off : off+n]); off += n; return s }
	var value func(typ uint32) any
	value = func(typ uint32) any {
		switch typ {
		case ggufUint32:
			return u32()
		case ggufInt32:
			return int32(u32())
		case ggufFloat32:
			return math.Float32frombits(u32())
		case ggufString:
			return str()
		case ggufArray:
			et, n := u32(), int(u64())
			out := make([]any, n)
			for i := range out {
				out[i] = value(et)
			}
			return out
		}
		t.Fatalf("%s: value type %d at byte %d", path, typ, off)
		return nil
	}
	if string(b[:4]) != "GGUF" {
		t.Fatalf("%s: magic %q", path, b[:4])
	}
	off = 4
	if v := u32(); v != 3 {
		t.Fatalf("%s: version %d", path, v)
	}
	nt, nkv := int(u64()), int(u64())
	f := &ggufFile{meta: map[string]any{}, tensors: map[string]ggufTensor{}}
	for i := 0; i < nkv; i++ {
		k := str()
		f.meta[k] = value(u32())
	}
	type info struct {
		name   string
		t      ggufTensor
		offset uint64
	}
	var infos []info
	for i := 0; i < nt; i++ {
		in := info{name: str()}
		for d := u32(); d > 0; d-- {
			in.t.dims = append(in.t.dims, u64())
		}
		in.t.dtype, in.offset = u32(), u64()
		infos = append(infos, in)
	}
	base := (off + ggufAlignment - 1) / ggufAlignment * ggufAlignment
	for _, in := range infos {
		n := uint64(1)
		for _, d := range in.t.dims {
			n *= d
		}
		size := map[uint32]uint64{ggmlF32: 4, ggmlBF16: 2}[in.t.dtype] * n
		in.t.data = b[uint64(base)+in.offset : uint64(base)+in.offset+size]
		f.tensors[in.name] = in.t
	}
	return f
}

// TestConvertGGUF converts a random-init checkpoint in float32 and in bfloat16 and reads the
// file back: llama.cpp's metadata and names, dimensions in ggml's order, each tensor's bytes
// (bf16 kept, norms widened), and q/k rows moved to llama.cpp's rotary layout.
func TestConvertGGUF(t *testing.T) {
	o := Defaults()
	o.Hidden, o.Layers, o.Heads, o.KVHeads, o.Intermediate, o.Vocab = 64, 2, 4, 2, 96, 300
	for _, dt := range []string{"float32", "bfloat16"} {
		o.DType = dt
		dir := filepath.Join(t.TempDir(), dt)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := SaveRandomModel(dir, o); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "model.gguf")
		if err := ConvertGGUF(dir, out); err != nil {
			t.Fatal(err)
		}
		ts, err := hf.ReadModelTensors(dir)
		if err != nil {
			t.Fatal(err)
		}
		f := readGGUF(t, out)
		for k, want := range map[string]any{"general.architecture": "llama", "llama.block_count": uint32(2),
			"llama.embedding_length": uint32(64), "llama.attention.head_count": uint32(4),
			"llama.attention.head_count_kv": uint32(2), "llama.feed_forward_length": uint32(96),
			"llama.rope.dimension_count": uint32(16), "llama.rope.freq_base": float32(10000)} {
			if got := f.meta[k]; got != want {
				t.Fatalf("%s: %s = %v, want %v", dt, k, got, want)
			}
		}
		if toks := f.meta["tokenizer.ggml.tokens"].([]any); len(toks) != o.Vocab || toks[3+10] != "<0x0A>" {
			t.Fatalf("%s: %d tokens, token 13 %v", dt, len(toks), toks[13])
		}
		if len(f.tensors) != len(ts) {
			t.Fatalf("%s: %d tensors, the checkpoint has %d", dt, len(f.tensors), len(ts))
		}
		// element reads a GGUF tensor's value at row r, column c (2-D) as float32.
		element := func(g ggufTensor, r, c int) float32 {
			i := r*int(g.dims[0]) + c
			if g.dtype == ggmlBF16 {
				return math.Float32frombits(uint32(binary.LittleEndian.Uint16(g.data[2*i:])) << 16)
			}
			return math.Float32frombits(binary.LittleEndian.Uint32(g.data[4*i:]))
		}
		hd := o.Hidden / o.Heads
		for hfName, gName := range map[string]string{"model.embed_tokens.weight": "token_embd.weight",
			"model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight", "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
			"model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight", "model.norm.weight": "output_norm.weight"} {
			x, g := ts[hfName], f.tensors[gName]
			wantType := uint32(ggmlF32)
			if dt == "bfloat16" && len(x.Shape) == 2 {
				wantType = ggmlBF16
			}
			if g.dtype != wantType {
				t.Fatalf("%s: %s has ggml type %d, want %d", dt, gName, g.dtype, wantType)
			}
			rows, cols := 1, x.Shape[0]
			if len(x.Shape) == 2 {
				rows, cols = x.Shape[0], x.Shape[1]
			}
			if int(g.dims[0]) != cols || (len(x.Shape) == 2 && int(g.dims[1]) != rows) {
				t.Fatalf("%s: %s dims %v, checkpoint shape %v", dt, gName, g.dims, x.Shape)
			}
			for r := 0; r < rows; r++ {
				from := r
				if gName == "blk.0.attn_q.weight" || gName == "blk.1.attn_k.weight" {
					// GGUF row h·d + 2i + s holds transformers' row h·d + s·d/2 + i.
					h, i, s := r/hd, (r%hd)/2, r%2
					from = h*hd + s*hd/2 + i
				}
				for c := 0; c < cols; c++ {
					if got, want := element(g, r, c), x.Data[from*cols+c]; got != want {
						t.Fatalf("%s: %s[%d][%d] = %v, want %v", dt, gName, r, c, got, want)
					}
				}
			}
		}
	}
}

// A checkpoint the converter does not handle is refused by name.
func TestConvertGGUFRefuses(t *testing.T) {
	dir := t.TempDir()
	o := Defaults()
	o.Hidden, o.Layers, o.Heads, o.KVHeads, o.Intermediate, o.Vocab = 64, 1, 4, 2, 96, 300
	if err := SaveRandomModel(dir, o); err != nil {
		t.Fatal(err)
	}
	cfg, err := hf.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Raw["model_type"] = "qwen2"
	if err := hf.WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	err = ConvertGGUF(dir, filepath.Join(dir, "model.gguf"))
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), `model_type "qwen2"`) {
		t.Fatalf("converting a qwen2 checkpoint: %v", err)
	}
}
