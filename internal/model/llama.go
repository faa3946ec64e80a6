package model

import (
	"fmt"
	"math"

	. "github.com/gomlx/gomlx/pkg/core/graph"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// llama covers the LLaMA family as transformers writes it: Llama 2/3, Mistral, Qwen2 (q/k/v
// biases), SmolLM, TinyLlama. Pre-norm RMSNorm blocks, RoPE, grouped-query attention, SwiGLU.
type llama struct{}

func init() {
	register("llama", llama{})
	register("mistral", llama{})
	register("qwen2", llama{})
}

func (llama) tensors(c *hf.Config, has func(string) bool) (map[string][]int, error) {
	D, V, I := c.HiddenSize, c.VocabSize, c.IntermediateSize
	qd, kvd := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	t := map[string][]int{
		"model.embed_tokens.weight": {V, D},
		"model.norm.weight":         {D},
	}
	switch {
	case c.NumLabels > 0:
		t["score.weight"] = []int{c.NumLabels, D}
	case !c.TieWordEmbeddings:
		t["lm_head.weight"] = []int{V, D}
	}
	for l := 0; l < c.NumLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		t[p+"input_layernorm.weight"] = []int{D}
		t[p+"post_attention_layernorm.weight"] = []int{D}
		t[p+"self_attn.q_proj.weight"] = []int{qd, D}
		t[p+"self_attn.k_proj.weight"] = []int{kvd, D}
		t[p+"self_attn.v_proj.weight"] = []int{kvd, D}
		t[p+"self_attn.o_proj.weight"] = []int{D, qd}
		if c.AttentionBias {
			t[p+"self_attn.q_proj.bias"] = []int{qd}
			t[p+"self_attn.k_proj.bias"] = []int{kvd}
			t[p+"self_attn.v_proj.bias"] = []int{kvd}
		}
		if c.OutputBias {
			t[p+"self_attn.o_proj.bias"] = []int{D}
		}
		t[p+"mlp.gate_proj.weight"] = []int{I, D}
		t[p+"mlp.up_proj.weight"] = []int{I, D}
		t[p+"mlp.down_proj.weight"] = []int{D, I}
		if c.MLPBias {
			t[p+"mlp.gate_proj.bias"] = []int{I}
			t[p+"mlp.up_proj.bias"] = []int{I}
			t[p+"mlp.down_proj.bias"] = []int{D}
		}
	}
	return t, nil
}

func (llama) hidden(w *weights, tokens, positions *Node, att *attention) *Node {
	c := w.m.Config
	x := gatherRows(w.get("model.embed_tokens.weight"), tokens)
	dims := tokens.Shape().Dimensions
	B, T := dims[0], dims[1]
	inv := invFreqs(c)
	scale := 1 / math.Sqrt(float64(c.HeadDim))
	for l := 0; l < c.NumLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		h := rmsNorm(x, w.get(p+"input_layernorm.weight"), c.NormEps)
		q := Reshape(w.linear(h, p+"self_attn.q_proj"), B, T, c.NumHeads, c.HeadDim)
		k := Reshape(w.linear(h, p+"self_attn.k_proj"), B, T, c.NumKVHeads, c.HeadDim)
		v := Reshape(w.linear(h, p+"self_attn.v_proj"), B, T, c.NumKVHeads, c.HeadDim)
		q, k = rope(q, positions, inv), rope(k, positions, inv)
		a := att.attend(l, q, k, v, scale)
		x = Add(x, w.linear(a, p+"self_attn.o_proj"))
		h = rmsNorm(x, w.get(p+"post_attention_layernorm.weight"), c.NormEps)
		gate := w.linear(h, p+"mlp.gate_proj")
		up := w.linear(h, p+"mlp.up_proj")
		x = Add(x, w.linear(Mul(Mul(gate, Sigmoid(gate)), up), p+"mlp.down_proj"))
	}
	return rmsNorm(x, w.get("model.norm.weight"), c.NormEps)
}

func (llama) lmHead(w *weights, h *Node) *Node {
	if w.m.Config.NumLabels > 0 {
		return Einsum("btd,vd->btv", h, w.get("score.weight"))
	}
	if w.has("lm_head.weight") {
		return Einsum("btd,vd->btv", h, w.get("lm_head.weight"))
	}
	return Einsum("btd,vd->btv", h, w.get("model.embed_tokens.weight"))
}
