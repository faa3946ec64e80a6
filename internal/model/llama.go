package model

import "github.com/cyclealign/cyclealign/internal/hf"

// llama describes the LLaMA family as transformers writes it: Llama 2/3, Mistral, Qwen2 (q/k/v
// biases), SmolLM, TinyLlama. Pre-norm RMSNorm blocks, RoPE, grouped-query attention, SwiGLU.
func llama(c *hf.Config, _ func(string) bool) (*desc, error) {
	layers := make([]layerDesc, c.NumLayers)
	for l := range layers {
		layers[l] = gatedLayer(c, l, c.AttentionBias)
	}
	return gatedDesc(c, layers), nil
}

func init() {
	register("llama", llama)
	register("mistral", llama)
	register("qwen2", llama)
}
