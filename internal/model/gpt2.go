package model

import (
	"fmt"
	"math"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// gpt2 describes GPT2LMHeadModel: learned positions, pre-norm LayerNorm blocks, Conv1D weights
// stored [in, out], a fused c_attn projection, gelu_new, a tied lm_head. Files of the bare
// GPT2Model (the original OpenAI conversions) name their tensors without "transformer.".
func gpt2(c *hf.Config, has func(string) bool) (*desc, error) {
	p := "transformer."
	if !has("transformer.wte.weight") && has("wte.weight") {
		p = ""
	}
	D, I := c.HiddenSize, c.IntermediateSize
	act := actGELUTanh
	if c.HiddenAct == "gelu" {
		act = actGELUErf
	}
	d := &desc{norm: layerNormKind, act: act, eps: c.NormEps,
		D: D, H: c.NumHeads, Hkv: c.NumHeads, hd: c.HeadDim, I: I, V: c.VocabSize,
		embed: p + "wte.weight", embedShape: []int{c.VocabSize, D},
		positions: p + "wpe.weight", posShape: []int{c.MaxPositions, D},
		final: normW{w: p + "ln_f.weight", b: p + "ln_f.bias"},
		head:  headFor(c, "lm_head.weight", p+"wte.weight"), labels: c.NumLabels,
	}
	conv := func(name string, in, out int) proj {
		return proj{weight: name + ".weight", bias: name + ".bias", in: in, out: out, conv: true}
	}
	for l := 0; l < c.NumLayers; l++ {
		b := fmt.Sprintf("%sh.%d.", p, l)
		scale := 1 / math.Sqrt(float64(c.HeadDim))
		if c.ScaleByLayerIdx {
			scale /= float64(l + 1)
		}
		d.layers = append(d.layers, layerDesc{
			ln1: normW{w: b + "ln_1.weight", b: b + "ln_1.bias"}, ln2: normW{w: b + "ln_2.weight", b: b + "ln_2.bias"},
			qkv:   []proj{conv(b+"attn.c_attn", D, 3*D)},
			o:     conv(b+"attn.c_proj", D, D),
			up:    []proj{conv(b+"mlp.c_fc", D, I)},
			down:  conv(b+"mlp.c_proj", I, D),
			scale: scale,
		})
	}
	return d, nil
}

func init() { register("gpt2", gpt2) }
