package hf

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/cyclealign/cyclealign/internal/files"
)

// Config is the part of a transformers config.json the engine uses, normalised across
// architectures (GPT-2's n_embd becomes HiddenSize, and so on). Raw keeps the file as read
// so that a save writes back every field, including those we do not interpret.
type Config struct {
	ModelType         string
	Architectures     []string
	VocabSize         int
	HiddenSize        int
	IntermediateSize  int
	NumLayers         int
	NumHeads          int
	NumKVHeads        int
	HeadDim           int
	MaxPositions      int
	NormEps           float64
	HiddenAct         string
	TieWordEmbeddings bool
	AttentionBias     bool // q/k/v biases (always true for qwen2)
	OutputBias        bool // o_proj bias (llama attention_bias)
	MLPBias           bool
	SlidingWindow     int // 0: none
	Rope              Rope
	BOSTokenID        int   // -1: none
	EOSTokenIDs       []int // transformers allows one id or a list
	PadTokenID        int   // -1: none
	NumLabels         int   // >0 for a ...ForSequenceClassification head
	ScaleByLayerIdx   bool  // GPT-2 scale_attn_by_inverse_layer_idx
	DType             string
	Raw               map[string]any
}

// Rope holds rotary-embedding parameters ("default" or "llama3").
type Rope struct {
	Theta                float64
	Type                 string
	Factor               float64
	LowFreqFactor        float64
	HighFreqFactor       float64
	OriginalMaxPositions int
}

// ReadConfig reads and validates dir/config.json.
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := files.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses config.json bytes.
func ParseConfig(b []byte) (*Config, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	r := reader{raw: raw}
	c := &Config{Raw: raw}
	c.ModelType = r.str("model_type", "")
	for _, a := range r.list("architectures") {
		if s, ok := a.(string); ok {
			c.Architectures = append(c.Architectures, s)
		}
	}
	c.DType = r.str("dtype", r.str("torch_dtype", "float32"))
	c.BOSTokenID = r.intOr("bos_token_id", -1)
	c.PadTokenID = r.intOr("pad_token_id", -1)
	switch v := raw["eos_token_id"].(type) {
	case float64:
		c.EOSTokenIDs = []int{int(v)}
	case []any:
		for _, x := range v {
			if f, ok := x.(float64); ok {
				c.EOSTokenIDs = append(c.EOSTokenIDs, int(f))
			}
		}
	}
	// Only sequence-classification checkpoints (reward models) have a score head; causal LMs
	// may still carry transformers' default id2label.
	for _, a := range c.Architectures {
		if strings.HasSuffix(a, "ForSequenceClassification") {
			c.NumLabels = 2
			if id2label, ok := raw["id2label"].(map[string]any); ok {
				c.NumLabels = len(id2label)
			}
			c.NumLabels = r.intOr("num_labels", c.NumLabels)
		}
	}
	c.TieWordEmbeddings = r.boolOr("tie_word_embeddings", c.ModelType == "gpt2")
	switch c.ModelType {
	case "llama", "mistral", "qwen2", "qwen3":
		c.VocabSize = r.int("vocab_size")
		c.HiddenSize = r.int("hidden_size")
		c.IntermediateSize = r.int("intermediate_size")
		c.NumLayers = r.int("num_hidden_layers")
		c.NumHeads = r.int("num_attention_heads")
		c.NumKVHeads = r.intOr("num_key_value_heads", c.NumHeads)
		if c.NumHeads > 0 {
			c.HeadDim = r.intOr("head_dim", c.HiddenSize/c.NumHeads)
		}
		if c.ModelType == "qwen3" { // Qwen3Config's own default, whatever the hidden size
			c.HeadDim = r.intOr("head_dim", 128)
		}
		c.MaxPositions = r.intOr("max_position_embeddings", 2048)
		c.NormEps = r.floatOr("rms_norm_eps", 1e-6)
		c.HiddenAct = r.str("hidden_act", "silu")
		c.MLPBias = r.boolOr("mlp_bias", false)
		if c.ModelType == "qwen2" {
			c.AttentionBias = true
		} else {
			c.AttentionBias = r.boolOr("attention_bias", false)
			c.OutputBias = c.AttentionBias
		}
		switch {
		case c.ModelType == "qwen3" && r.boolOr("use_sliding_window", false):
			// Qwen3 slides the window only in the layers from max_window_layers on.
			return nil, fmt.Errorf("field use_sliding_window: unsupported value true for qwen3")
		case c.ModelType != "llama" && r.boolOr("use_sliding_window", c.ModelType == "mistral"):
			c.SlidingWindow = r.intOr("sliding_window", 0)
		}
		rope, err := parseRope(raw)
		if err != nil {
			return nil, err
		}
		c.Rope = rope
		if c.HiddenAct != "silu" {
			return nil, fmt.Errorf("field hidden_act: unsupported value %q for %s (supported: silu)", c.HiddenAct, c.ModelType)
		}
	case "gpt2":
		c.VocabSize = r.int("vocab_size")
		c.HiddenSize = r.int("n_embd")
		c.NumLayers = r.int("n_layer")
		c.NumHeads = r.int("n_head")
		c.NumKVHeads = c.NumHeads
		if c.NumHeads > 0 {
			c.HeadDim = c.HiddenSize / c.NumHeads
		}
		c.IntermediateSize = r.intOr("n_inner", 4*c.HiddenSize)
		c.MaxPositions = r.int("n_positions")
		c.NormEps = r.floatOr("layer_norm_epsilon", 1e-5)
		c.HiddenAct = r.str("activation_function", "gelu_new")
		c.AttentionBias, c.OutputBias, c.MLPBias = true, true, true
		c.ScaleByLayerIdx = r.boolOr("scale_attn_by_inverse_layer_idx", false)
		if !r.boolOr("scale_attn_weights", true) {
			return nil, fmt.Errorf("field scale_attn_weights: unsupported value false")
		}
		if c.HiddenAct != "gelu_new" && c.HiddenAct != "gelu_pytorch_tanh" && c.HiddenAct != "gelu" {
			return nil, fmt.Errorf("field activation_function: unsupported value %q (supported: gelu_new, gelu_pytorch_tanh, gelu)", c.HiddenAct)
		}
	case "":
		return nil, fmt.Errorf("field model_type: missing")
	default:
		return nil, fmt.Errorf("field model_type: unsupported value %q (supported: llama, mistral, qwen2, qwen3, gpt2)", c.ModelType)
	}
	if r.err != nil {
		return nil, r.err
	}
	switch c.DType {
	case "float32", "bfloat16", "float16":
	default:
		return nil, fmt.Errorf("field dtype: unsupported value %q (supported: float32, bfloat16, float16)", c.DType)
	}
	// Upper bounds well above any released model (Llama-3.1-405B: 126 layers, hidden 16,384,
	// intermediate 53,248; Gemma: 262,144 tokens), so a corrupt file is refused before
	// anything is allocated for it.
	for _, f := range []struct {
		name   string
		v, max int
	}{{"vocab_size", c.VocabSize, 1 << 22}, {"hidden_size", c.HiddenSize, 1 << 17}, {"num_hidden_layers", c.NumLayers, 1 << 10},
		{"num_attention_heads", c.NumHeads, 1 << 10}, {"num_key_value_heads", c.NumKVHeads, 1 << 10},
		{"intermediate_size", c.IntermediateSize, 1 << 19}, {"head_dim", c.HeadDim, 1 << 12},
		{"max_position_embeddings", c.MaxPositions, 1 << 24}} {
		if f.v <= 0 {
			return nil, fmt.Errorf("field %s: must be positive, got %d", f.name, f.v)
		}
		if f.v > f.max {
			return nil, fmt.Errorf("field %s: %d is beyond any supported model (at most %d)", f.name, f.v, f.max)
		}
	}
	if !(c.NormEps >= 0 && c.NormEps < 1) {
		return nil, fmt.Errorf("field rms_norm_eps/layer_norm_epsilon: want a small non-negative number, got %v", c.NormEps)
	}
	if c.SlidingWindow < 0 {
		return nil, fmt.Errorf("field sliding_window: must not be negative, got %d", c.SlidingWindow)
	}
	if c.ModelType != "gpt2" {
		if err := c.Rope.check(); err != nil {
			return nil, err
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return nil, fmt.Errorf("field num_key_value_heads: %d does not divide num_attention_heads %d", c.NumKVHeads, c.NumHeads)
	}
	if c.ModelType == "gpt2" && c.HiddenSize%c.NumHeads != 0 {
		return nil, fmt.Errorf("field n_head: %d does not divide n_embd %d", c.NumHeads, c.HiddenSize)
	}
	return c, nil
}

func parseRope(raw map[string]any) (Rope, error) {
	rope := Rope{Theta: 10000, Type: "default"}
	field := "rope_scaling"
	params, _ := raw["rope_scaling"].(map[string]any)
	if p, ok := raw["rope_parameters"].(map[string]any); ok {
		params, field = p, "rope_parameters"
	}
	if t, ok := raw["rope_theta"].(float64); ok {
		rope.Theta = t
	}
	if params == nil {
		return rope, nil
	}
	if t, ok := params["rope_theta"].(float64); ok {
		rope.Theta = t
	}
	typ, _ := params["rope_type"].(string)
	if typ == "" {
		typ, _ = params["type"].(string)
	}
	if typ == "" {
		typ = "default"
	}
	rope.Type = typ
	switch typ {
	case "default":
	case "llama3":
		num := func(k string) (float64, error) {
			v, ok := params[k].(float64)
			if !ok {
				return 0, fmt.Errorf("field %s.%s: required for rope_type llama3", field, k)
			}
			return v, nil
		}
		var err error
		if rope.Factor, err = num("factor"); err != nil {
			return rope, err
		}
		if rope.LowFreqFactor, err = num("low_freq_factor"); err != nil {
			return rope, err
		}
		if rope.HighFreqFactor, err = num("high_freq_factor"); err != nil {
			return rope, err
		}
		omp, err := num("original_max_position_embeddings")
		if err != nil {
			return rope, err
		}
		rope.OriginalMaxPositions = int(omp)
	default:
		return rope, fmt.Errorf("field %s.rope_type: unsupported value %q (supported: default, llama3)", field, typ)
	}
	return rope, nil
}

// check refuses values that make the rotary frequencies NaN or infinite.
func (r Rope) check() error {
	if !(r.Theta > 1) || math.IsInf(r.Theta, 0) {
		return fmt.Errorf("field rope_theta: want a finite number above 1, got %v", r.Theta)
	}
	if r.Type == "llama3" {
		if !(r.Factor > 0) || !(r.LowFreqFactor > 0) || !(r.HighFreqFactor > r.LowFreqFactor) || r.OriginalMaxPositions <= 0 {
			return fmt.Errorf("field rope_scaling: llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got %+v", r)
		}
	}
	return nil
}

// reader pulls typed fields out of a JSON object and remembers the first error.
type reader struct {
	raw map[string]any
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) int(key string) int {
	v, ok := r.raw[key]
	if !ok || v == nil {
		r.fail("field %s: missing", key)
		return 0
	}
	f, ok := v.(float64)
	if !ok || f != float64(int(f)) {
		r.fail("field %s: want an integer, got %v", key, v)
		return 0
	}
	return int(f)
}

func (r *reader) intOr(key string, def int) int {
	if v, ok := r.raw[key]; !ok || v == nil {
		return def
	}
	return r.int(key)
}

func (r *reader) floatOr(key string, def float64) float64 {
	v, ok := r.raw[key]
	if !ok || v == nil {
		return def
	}
	f, ok := v.(float64)
	if !ok {
		r.fail("field %s: want a number, got %v", key, v)
	}
	return f
}

func (r *reader) boolOr(key string, def bool) bool {
	v, ok := r.raw[key]
	if !ok || v == nil {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		r.fail("field %s: want true or false, got %v", key, v)
	}
	return b
}

func (r *reader) str(key, def string) string {
	v, ok := r.raw[key]
	if !ok || v == nil {
		return def
	}
	s, ok := v.(string)
	if !ok {
		r.fail("field %s: want a string, got %v", key, v)
	}
	return s
}

func (r *reader) list(key string) []any {
	l, _ := r.raw[key].([]any)
	return l
}

// WriteConfig writes c.Raw as dir/config.json, atomically.
func WriteConfig(dir string, c *Config) error {
	b, err := json.MarshalIndent(c.Raw, "", "  ")
	if err != nil {
		return err
	}
	return files.WriteAtomic(filepath.Join(dir, "config.json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}
