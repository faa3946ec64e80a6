package model

import (
	"fmt"
	"math"

	. "github.com/gomlx/gomlx/pkg/core/graph"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// gpt2 is GPT2LMHeadModel: learned positions, pre-norm LayerNorm blocks, Conv1D weights
// stored [in, out], a fused c_attn projection, gelu_new, tied lm_head.
type gpt2 struct{}

func init() { register("gpt2", gpt2{}) }

// gpt2Prefix is "transformer." for GPT2LMHeadModel files and "" for bare GPT2Model files
// (the original OpenAI conversions).
func gpt2Prefix(has func(string) bool) string {
	if !has("transformer.wte.weight") && has("wte.weight") {
		return ""
	}
	return "transformer."
}

func (gpt2) tensors(c *hf.Config, has func(string) bool) (map[string][]int, error) {
	D, I := c.HiddenSize, c.IntermediateSize
	p := gpt2Prefix(has)
	t := map[string][]int{
		p + "wte.weight":  {c.VocabSize, D},
		p + "wpe.weight":  {c.MaxPositions, D},
		p + "ln_f.weight": {D},
		p + "ln_f.bias":   {D},
	}
	if !c.TieWordEmbeddings {
		t["lm_head.weight"] = []int{c.VocabSize, D}
	}
	for l := 0; l < c.NumLayers; l++ {
		b := fmt.Sprintf("%sh.%d.", p, l)
		for _, n := range []string{"ln_1", "ln_2"} {
			t[b+n+".weight"] = []int{D}
			t[b+n+".bias"] = []int{D}
		}
		t[b+"attn.c_attn.weight"] = []int{D, 3 * D}
		t[b+"attn.c_attn.bias"] = []int{3 * D}
		t[b+"attn.c_proj.weight"] = []int{D, D}
		t[b+"attn.c_proj.bias"] = []int{D}
		t[b+"mlp.c_fc.weight"] = []int{D, I}
		t[b+"mlp.c_fc.bias"] = []int{I}
		t[b+"mlp.c_proj.weight"] = []int{I, D}
		t[b+"mlp.c_proj.bias"] = []int{D}
	}
	return t, nil
}

// conv1d applies a GPT-2 Conv1D (weight [in,out], bias [out]).
func conv1d(w *weights, x *Node, name string) *Node {
	y := Einsum("bti,io->bto", x, w.get(name+".weight"))
	return Add(y, ExpandLeftToRank(w.get(name+".bias"), y.Rank()))
}

func (gpt2) hidden(w *weights, tokens, positions *Node, att *attention) *Node {
	c := w.m.Config
	p := gpt2Prefix(w.has)
	D, H, hd := c.HiddenSize, c.NumHeads, c.HeadDim
	g := tokens.Graph()
	x := Add(gatherRows(w.get(p+"wte.weight"), tokens), gatherRows(w.get(p+"wpe.weight"), positions))
	act := geluTanh
	if c.HiddenAct == "gelu" {
		act = geluErf
	}
	for l := 0; l < c.NumLayers; l++ {
		b := fmt.Sprintf("%sh.%d.", p, l)
		h := layerNorm(x, w.get(b+"ln_1.weight"), w.get(b+"ln_1.bias"), c.NormEps)
		// c_attn packs q, k, v along its output axis; split the weight with one-hot contractions.
		wqkv := Reshape(w.get(b+"attn.c_attn.weight"), D, 3, H, hd)
		bqkv := Reshape(w.get(b+"attn.c_attn.bias"), 3, H, hd)
		proj := func(i int) *Node {
			e := oneHot(g, 3, i)
			wi := Einsum("dshe,s->dhe", wqkv, e)
			bi := Einsum("she,s->he", bqkv, e)
			y := Einsum("btd,dhe->bthe", h, wi)
			return Add(y, ExpandLeftToRank(bi, y.Rank()))
		}
		scale := 1 / math.Sqrt(float64(hd))
		if c.ScaleByLayerIdx {
			scale /= float64(l + 1)
		}
		a := att.attend(l, proj(0), proj(1), proj(2), scale)
		x = Add(x, conv1d(w, a, b+"attn.c_proj"))
		h = layerNorm(x, w.get(b+"ln_2.weight"), w.get(b+"ln_2.bias"), c.NormEps)
		x = Add(x, conv1d(w, act(conv1d(w, h, b+"mlp.c_fc")), b+"mlp.c_proj"))
	}
	return layerNorm(x, w.get(p+"ln_f.weight"), w.get(p+"ln_f.bias"), c.NormEps)
}

func (gpt2) lmHead(w *weights, h *Node) *Node {
	if w.has("lm_head.weight") {
		return Einsum("btd,vd->btv", h, w.get("lm_head.weight"))
	}
	return Einsum("btd,vd->btv", h, w.get(gpt2Prefix(w.has)+"wte.weight"))
}
