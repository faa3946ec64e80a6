package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"

	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/hf"
)

// GGUF value and tensor types (ggml's gguf.h and ggml.h).
const (
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufString  = 8
	ggufArray   = 9

	ggmlF32  = 0
	ggmlBF16 = 30

	ggufFileAllF32     = 0
	ggufFileMostlyBF16 = 32

	ggufAlignment = 32
)

// ggufNames maps a LLaMA checkpoint's tensor names to llama.cpp's.
var ggufNames = []struct {
	re  *regexp.Regexp
	out string
}{
	{regexp.MustCompile(`^model\.embed_tokens\.weight$`), "token_embd.weight"},
	{regexp.MustCompile(`^model\.norm\.weight$`), "output_norm.weight"},
	{regexp.MustCompile(`^lm_head\.weight$`), "output.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.input_layernorm\.weight$`), "blk.$1.attn_norm.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.post_attention_layernorm\.weight$`), "blk.$1.ffn_norm.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.self_attn\.q_proj\.weight$`), "blk.$1.attn_q.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.self_attn\.k_proj\.weight$`), "blk.$1.attn_k.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.self_attn\.v_proj\.weight$`), "blk.$1.attn_v.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$`), "blk.$1.attn_output.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$`), "blk.$1.ffn_gate.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.mlp\.up_proj\.weight$`), "blk.$1.ffn_up.weight"},
	{regexp.MustCompile(`^model\.layers\.(\d+)\.mlp\.down_proj\.weight$`), "blk.$1.ffn_down.weight"},
}

var qkProj = regexp.MustCompile(`self_attn\.(q|k)_proj\.weight$`)

// ConvertGGUF writes the LLaMA checkpoint in dir (config.json, safetensors) as a GGUF file that
// llama.cpp loads, keeping each tensor's dtype (float32 or bfloat16). Its vocabulary is a
// placeholder of the right size (llama.cpp needs one; the benchmark passes token ids), so
// the file is for measuring and comparing, not for chatting.
func ConvertGGUF(dir, out string) error {
	cfg, err := hf.ReadConfig(dir)
	if err != nil {
		return err
	}
	if cfg.ModelType != "llama" || cfg.AttentionBias || cfg.OutputBias || cfg.MLPBias || cfg.Rope.Type != "default" {
		return fmt.Errorf("%s: the GGUF converter handles plain LLaMA checkpoints (model_type llama, no biases, default RoPE); got model_type %q", dir, cfg.ModelType)
	}
	ts, err := hf.ReadModelTensorsBF16(dir)
	if err != nil {
		return err
	}
	type entry struct {
		name  string
		shape []int
		dtype uint32
		data  []byte
	}
	var entries []entry
	allF32 := true
	for _, name := range slices.Sorted(maps.Keys(ts)) {
		t := ts[name]
		gname := ""
		for _, m := range ggufNames {
			if m.re.MatchString(name) {
				gname = m.re.ReplaceAllString(name, m.out)
				break
			}
		}
		if gname == "" {
			return fmt.Errorf("%s: tensor %s has no llama.cpp name", dir, name)
		}
		e := entry{name: gname, shape: t.Shape}
		switch {
		case t.BF16 != nil && len(t.Shape) == 1: // llama.cpp multiplies by norm weights in float32 only
			e.dtype = ggmlF32
			e.data = make([]byte, 4*len(t.BF16))
			for i, v := range t.BF16 {
				binary.LittleEndian.PutUint32(e.data[4*i:], uint32(v)<<16)
			}
		case t.BF16 != nil:
			e.dtype, allF32 = ggmlBF16, false
			e.data = make([]byte, 2*len(t.BF16))
			for i, v := range t.BF16 {
				binary.LittleEndian.PutUint16(e.data[2*i:], v)
			}
		case t.Stored == hf.F32:
			e.dtype = ggmlF32
			e.data = make([]byte, 4*len(t.Data))
			for i, v := range t.Data {
				binary.LittleEndian.PutUint32(e.data[4*i:], math.Float32bits(v))
			}
		default:
			return fmt.Errorf("%s: tensor %s is %v; the GGUF converter takes float32 and bfloat16", dir, name, t.Stored)
		}
		if m := qkProj.FindStringSubmatch(name); m != nil {
			heads := cfg.NumHeads
			if m[1] == "k" {
				heads = cfg.NumKVHeads
			}
			e.data = interleaveRoPE(e.data, heads, t.Shape[0]/heads, t.Shape[1]*len(e.data)/t.NumElements())
		}
		entries = append(entries, e)
	}

	fileType := uint32(ggufFileAllF32)
	if !allF32 {
		fileType = ggufFileMostlyBF16
	}
	w := &ggufWriter{}
	w.kv("general.architecture", "llama")
	w.kv("general.name", "cyclealign bench model")
	w.kv("general.file_type", fileType)
	w.kv("general.alignment", uint32(ggufAlignment))
	w.kv("llama.context_length", uint32(cfg.MaxPositions))
	w.kv("llama.embedding_length", uint32(cfg.HiddenSize))
	w.kv("llama.block_count", uint32(cfg.NumLayers))
	w.kv("llama.feed_forward_length", uint32(cfg.IntermediateSize))
	w.kv("llama.rope.dimension_count", uint32(cfg.HeadDim))
	w.kv("llama.attention.head_count", uint32(cfg.NumHeads))
	w.kv("llama.attention.head_count_kv", uint32(cfg.NumKVHeads))
	w.kv("llama.attention.layer_norm_rms_epsilon", float32(cfg.NormEps))
	w.kv("llama.rope.freq_base", float32(cfg.Rope.Theta))
	w.kv("llama.vocab_size", uint32(cfg.VocabSize))
	tokens, scores, types := placeholderVocab(cfg.VocabSize)
	w.kv("tokenizer.ggml.model", "llama")
	w.kv("tokenizer.ggml.tokens", tokens)
	w.kv("tokenizer.ggml.scores", scores)
	w.kv("tokenizer.ggml.token_type", types)
	w.kv("tokenizer.ggml.unknown_token_id", uint32(0))
	w.kv("tokenizer.ggml.bos_token_id", uint32(1))
	w.kv("tokenizer.ggml.eos_token_id", uint32(2))

	var infos ggufBuf
	offset := uint64(0)
	for _, e := range entries {
		infos.str(e.name)
		infos.u32(uint32(len(e.shape)))
		for i := len(e.shape) - 1; i >= 0; i-- { // ggml lists the fastest-varying dimension first
			infos.u64(uint64(e.shape[i]))
		}
		infos.u32(e.dtype)
		infos.u64(offset)
		offset += pad(uint64(len(e.data)))
	}

	return files.WriteAtomic(out, func(f io.Writer) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		var head ggufBuf
		head.raw([]byte("GGUF"))
		head.u32(3)
		head.u64(uint64(len(entries)))
		head.u64(uint64(w.count))
		n := len(head) + len(w.buf) + len(infos)
		for _, part := range [][]byte{head, w.buf, infos, make([]byte, pad(uint64(n))-uint64(n))} {
			if _, err := bw.Write(part); err != nil {
				return err
			}
		}
		for _, e := range entries {
			if _, err := bw.Write(e.data); err != nil {
				return err
			}
			if _, err := bw.Write(make([]byte, pad(uint64(len(e.data)))-uint64(len(e.data)))); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}

// interleaveRoPE reorders a q or k projection's rows from transformers' rotary layout (each
// head's first half paired with its second) to llama.cpp's LLaMA layout (adjacent pairs), as
// llama.cpp's own converter does: row h·d + s·d/2 + i moves to h·d + 2i + s.
func interleaveRoPE(data []byte, heads, headDim, rowBytes int) []byte {
	out := make([]byte, len(data))
	half := headDim / 2
	for h := 0; h < heads; h++ {
		for s := 0; s < 2; s++ {
			for i := 0; i < half; i++ {
				from := (h*headDim + s*half + i) * rowBytes
				to := (h*headDim + 2*i + s) * rowBytes
				copy(out[to:to+rowBytes], data[from:from+rowBytes])
			}
		}
	}
	return out
}

// placeholderVocab is a SentencePiece-style vocabulary of n entries: <unk>, <s>, </s>, the 256
// byte tokens llama.cpp looks up, then numbered pieces.
func placeholderVocab(n int) (tokens []string, scores []float32, types []int32) {
	for i := 0; i < n; i++ {
		var tok string
		typ := int32(1) // normal
		switch {
		case i == 0:
			tok, typ = "<unk>", 2
		case i < 3:
			tok, typ = []string{"<s>", "</s>"}[i-1], 3
		case i < 3+256:
			tok, typ = fmt.Sprintf("<0x%02X>", i-3), 6
		default:
			tok = fmt.Sprintf("▁t%d", i)
		}
		tokens = append(tokens, tok)
		scores = append(scores, -float32(i))
		types = append(types, typ)
	}
	return tokens, scores, types
}

func pad(n uint64) uint64 { return (n + ggufAlignment - 1) / ggufAlignment * ggufAlignment }

// ggufBuf appends GGUF's little-endian encodings.
type ggufBuf []byte

func (b *ggufBuf) raw(p []byte) { *b = append(*b, p...) }
func (b *ggufBuf) u32(v uint32) { *b = binary.LittleEndian.AppendUint32(*b, v) }
func (b *ggufBuf) u64(v uint64) { *b = binary.LittleEndian.AppendUint64(*b, v) }
func (b *ggufBuf) str(s string) { b.u64(uint64(len(s))); b.raw([]byte(s)) }

// ggufWriter collects metadata key-value pairs.
type ggufWriter struct {
	buf   ggufBuf
	count int
}

// kv appends a key and its value, typed by the Go type of v.
func (w *ggufWriter) kv(key string, v any) {
	w.count++
	w.buf.str(key)
	switch x := v.(type) {
	case string:
		w.buf.u32(ggufString)
		w.buf.str(x)
	case uint32:
		w.buf.u32(ggufUint32)
		w.buf.u32(x)
	case float32:
		w.buf.u32(ggufFloat32)
		w.buf.u32(math.Float32bits(x))
	case []string:
		w.array(ggufString, len(x), func(i int) { w.buf.str(x[i]) })
	case []float32:
		w.array(ggufFloat32, len(x), func(i int) { w.buf.u32(math.Float32bits(x[i])) })
	case []int32:
		w.array(ggufInt32, len(x), func(i int) { w.buf.u32(uint32(x[i])) })
	default:
		panic(fmt.Sprintf("gguf: no encoding for %T", v))
	}
}

// array writes an array value's header (element type, length), then each element by put.
func (w *ggufWriter) array(elem uint32, n int, put func(i int)) {
	w.buf.u32(ggufArray)
	w.buf.u32(elem)
	w.buf.u64(uint64(n))
	for i := range n {
		put(i)
	}
}
