package model

import "github.com/cyclealign/cyclealign/internal/hf"

// qwen3 describes Qwen3 (transformers' modeling_qwen3.py): the LLaMA block with a per-head
// RMSNorm on q and on k before RoPE (q_norm, k_norm, weights [head_dim]), an explicit head_dim
// that need not be hidden/heads, and biases only where attention_bias says.
func qwen3(c *hf.Config, _ func(string) bool) (*desc, error) {
	layers := make([]layerDesc, c.NumLayers)
	for l := range layers {
		ly := gatedLayer(c, l, c.AttentionBias)
		p := ly.ln1.w[:len(ly.ln1.w)-len("input_layernorm.weight")]
		ly.qNorm, ly.kNorm = p+"self_attn.q_norm.weight", p+"self_attn.k_norm.weight"
		layers[l] = ly
	}
	return gatedDesc(c, layers), nil
}

func init() { register("qwen3", qwen3) }
