// Package hf reads and writes the HuggingFace file formats a model directory is made of:
// config.json and safetensors (single file or sharded). It knows nothing about graphs.
package hf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cyclealign/cyclealign/internal/cpu"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/x448/float16"
)

// DType is a safetensors element type.
type DType string

// The element types the engine reads and writes.
const (
	F32  DType = "F32"
	BF16 DType = "BF16"
	F16  DType = "F16"
)

// DTypeOf maps a config.json dtype name ("bfloat16") to its safetensors type (F32 by default).
func DTypeOf(name string) DType {
	switch name {
	case "bfloat16":
		return BF16
	case "float16":
		return F16
	}
	return F32
}

func (d DType) size() int {
	switch d {
	case F32:
		return 4
	case BF16, F16:
		return 2
	}
	return 0
}

// Tensor is a tensor read from (or to be written to) a safetensors file. Values are always
// held as float32; Stored records the element type of the file so that a save can restore it.
type Tensor struct {
	Shape  []int
	Stored DType
	Data   []float32
	// BF16 holds a bfloat16 tensor's bits instead of Data when it was read to be kept in
	// bfloat16 (ReadModelTensorsBF16): half the memory, nothing widened.
	BF16 []uint16
	// Source, when Data is nil, gives the values to WriteSafetensors as it reaches the tensor,
	// so a large model is written without all of it widened to float32 at once.
	Source func() ([]float32, error)
}

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

type headerEntry struct {
	DType       string `json:"dtype"`
	Shape       []int  `json:"shape"`
	DataOffsets [2]int `json:"data_offsets"`
}

// maxHeader bounds the JSON header so a corrupt length field cannot make us allocate gigabytes.
const maxHeader = 100 << 20

// ReadSafetensors reads every tensor of one safetensors file.
func ReadSafetensors(path string) (map[string]*Tensor, error) { return readShard(path, false) }

// readSafetensors parses size bytes of safetensors from f; path names it in errors. Every
// shape and offset is checked against the data's length before anything is allocated.
func readSafetensors(f io.ReaderAt, size int64, path string, keepBF16 bool) (map[string]*Tensor, error) {
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("%s: truncated safetensors file: cannot read the 8-byte header length", path)
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen > maxHeader || int64(hlen)+8 > size {
		return nil, fmt.Errorf("%s: header length %d does not fit a file of %d bytes (truncated or not safetensors)", path, hlen, size)
	}
	hbuf := make([]byte, hlen)
	if _, err := f.ReadAt(hbuf, 8); err != nil {
		return nil, fmt.Errorf("%s: reading header: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hbuf, &raw); err != nil {
		return nil, fmt.Errorf("%s: header is not valid JSON: %w", path, err)
	}
	dataStart := int64(8 + hlen)
	dataLen := size - dataStart
	out := make(map[string]*Tensor, len(raw))
	names := make([]string, 0, len(raw))
	for name := range raw {
		if name != "__metadata__" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		var e headerEntry
		if err := json.Unmarshal(raw[name], &e); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: bad header entry: %w", path, name, err)
		}
		dt := DType(e.DType)
		if dt.size() == 0 {
			return nil, fmt.Errorf("%s: tensor %q: unsupported dtype %q (supported: F32, BF16, F16)", path, name, e.DType)
		}
		t := &Tensor{Shape: e.Shape, Stored: dt}
		n := int64(1)
		for _, d := range e.Shape {
			if d < 0 {
				return nil, fmt.Errorf("%s: tensor %q: negative dimension in shape %v", path, name, e.Shape)
			}
			if d > 0 && n > dataLen/int64(d) {
				n = dataLen + 1 // more elements than bytes cannot fit; checked before it could overflow
			} else {
				n *= int64(d)
			}
		}
		begin, end := int64(e.DataOffsets[0]), int64(e.DataOffsets[1])
		if begin < 0 || end < begin || end-begin != n*int64(dt.size()) {
			return nil, fmt.Errorf("%s: tensor %q: data_offsets [%d,%d] do not match shape %v of %s", path, name, begin, end, e.Shape, dt)
		}
		if end > dataLen {
			return nil, fmt.Errorf("%s: tensor %q: file is truncated (tensor ends at byte %d, data has %d)", path, name, end, dataLen)
		}
		buf := make([]byte, end-begin)
		if _, err := f.ReadAt(buf, dataStart+begin); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		if keepBF16 && dt == BF16 {
			t.BF16 = make([]uint16, n)
			for i := range t.BF16 {
				t.BF16[i] = binary.LittleEndian.Uint16(buf[2*i:])
			}
		} else {
			t.Data = decode(dt, buf, int(n))
		}
		out[name] = t
	}
	return out, nil
}

func decode(dt DType, buf []byte, n int) []float32 {
	out := make([]float32, n)
	switch dt {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(buf[2*i:])) << 16)
		}
	case F16:
		for i := range out {
			out[i] = float16.Frombits(binary.LittleEndian.Uint16(buf[2*i:])).Float32()
		}
	}
	return out
}

func encode(dt DType, data []float32) []byte {
	buf := make([]byte, len(data)*dt.size())
	switch dt {
	case F32:
		for i, v := range data {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range data {
			binary.LittleEndian.PutUint16(buf[2*i:], cpu.RoundBF16(v))
		}
	case F16:
		for i, v := range data {
			binary.LittleEndian.PutUint16(buf[2*i:], float16.Fromfloat32(v).Bits())
		}
	}
	return buf
}

// WriteSafetensors writes tensors to path atomically (temporary file, fsync, rename), each in
// its Stored dtype (F32 when unset), names sorted as transformers writes them.
func WriteSafetensors(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{}
	if metadata != nil {
		header["__metadata__"] = metadata
	}
	offset := 0
	for _, n := range names {
		t := tensors[n]
		dt := t.Stored
		if dt == "" {
			dt = F32
		}
		sz := t.NumElements() * dt.size()
		header[n] = headerEntry{DType: string(dt), Shape: t.Shape, DataOffsets: [2]int{offset, offset + sz}}
		offset += sz
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return err
	}
	// Pad the header with spaces to an 8-byte boundary, as the reference writer does.
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	return files.WriteAtomic(path, func(w io.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hb)))
		if _, err := w.Write(lenBuf[:]); err != nil {
			return err
		}
		if _, err := w.Write(hb); err != nil {
			return err
		}
		for _, n := range names {
			t := tensors[n]
			dt := t.Stored
			if dt == "" {
				dt = F32
			}
			data := t.Data
			if data == nil && t.Source != nil {
				var err error
				if data, err = t.Source(); err != nil {
					return fmt.Errorf("tensor %q: %w", n, err)
				}
			}
			if len(data) != t.NumElements() { // the file is not written: WriteAtomic drops it
				return fmt.Errorf("tensor %q: %d values for shape %v", n, len(data), t.Shape)
			}
			if _, err := w.Write(encode(dt, data)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadModelTensors reads model.safetensors, or the shards named by model.safetensors.index.json.
func ReadModelTensors(dir string) (map[string]*Tensor, error) { return readModelTensors(dir, false) }

// ReadModelTensorsBF16 is ReadModelTensors with bfloat16 tensors kept as their bits (Tensor.BF16).
func ReadModelTensorsBF16(dir string) (map[string]*Tensor, error) { return readModelTensors(dir, true) }

func readShard(path string, keepBF16 bool) (map[string]*Tensor, error) {
	f, err := files.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return readSafetensors(f, st.Size(), path, keepBF16)
}

func readModelTensors(dir string, keepBF16 bool) (map[string]*Tensor, error) {
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		return readShard(single, keepBF16)
	}
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	b, err := files.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("%s: no model.safetensors or model.safetensors.index.json", dir)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: weight_map is empty", indexPath)
	}
	shards := map[string]bool{}
	for _, f := range idx.WeightMap {
		if strings.Contains(f, "/") || strings.Contains(f, `\`) {
			return nil, fmt.Errorf("%s: shard name %q must be a plain file name", indexPath, f)
		}
		shards[f] = true
	}
	out := map[string]*Tensor{}
	for shard := range shards {
		ts, err := readShard(filepath.Join(dir, shard), keepBF16)
		if err != nil {
			return nil, err
		}
		for n, t := range ts {
			out[n] = t
		}
	}
	for name, shard := range idx.WeightMap {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("%s: tensor %q listed in the index is missing from %s", indexPath, name, shard)
		}
	}
	return out, nil
}
