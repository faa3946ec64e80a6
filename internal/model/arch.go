package model

import (
	"fmt"
	"math"
	"sort"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// An architecture family is described once, as data: one file per family (llama.go, gpt2.go,
// qwen3.go) turns a config into a desc, which names every tensor and says which norm,
// activation, position scheme and attention variant the blocks use. Both engines compute from
// the desc alone: graph.go builds GoMLX graphs from it, cpu.go and cpu_train.go run the
// kernels on it. A new family is a new description file; neither engine changes unless it
// brings an operation they lack.

// family builds the description of a config; has reports whether an optional tensor is
// present in the checkpoint.
type family func(c *hf.Config, has func(string) bool) (*desc, error)

var families = map[string]family{}

func register(modelType string, f family) { families[modelType] = f }

// describe returns the description of cfg's architecture, or an error naming the model type
// when no family handles it.
func describe(cfg *hf.Config, has func(string) bool) (*desc, error) {
	f, ok := families[cfg.ModelType]
	if !ok {
		return nil, errUnsupported(cfg.ModelType)
	}
	return f(cfg, has)
}

type normKind int

const (
	rmsNormKind   normKind = iota // x / sqrt(mean(x²) + eps) · w
	layerNormKind                 // (x − mean) / sqrt(var + eps) · w + b
)

type actKind int

const (
	actSwiGLU   actKind = iota // silu(gate) · up, from two projections
	actGELUTanh                // gelu_new / gelu_pytorch_tanh, from one projection
	actGELUErf                 // the exact GELU
)

// proj is one linear layer's tensors: a torch.nn.Linear weight [out][in], or a GPT-2 Conv1D
// weight stored [in][out] (conv), and its bias ("" for none).
type proj struct {
	weight, bias string
	out, in      int
	conv         bool
}

// normW is a norm's weight and, for LayerNorm, bias.
type normW struct{ w, b string }

// layerDesc is one transformer block: pre-norm attention, then pre-norm MLP, both residual.
type layerDesc struct {
	ln1, ln2 normW
	// qkv computes q|k|v along the output axis: three projections, or one fused (GPT-2's c_attn).
	qkv []proj
	o   proj
	// up feeds the activation: gate and up for SwiGLU (in that order), one projection for GELU.
	up   []proj
	down proj
	// qNorm and kNorm are per-head RMSNorm weights [head_dim] applied to q and k before RoPE
	// (Qwen3); "" for none.
	qNorm, kNorm string
	scale        float64 // attention logits' scale
}

// desc is an architecture instantiated for one config.
type desc struct {
	norm normKind
	act  actKind
	eps  float64
	// D, H, Hkv, hd, I: hidden size, query heads, key/value heads, head size, MLP width.
	D, H, Hkv, hd, I int
	V                int // vocabulary
	window           int // sliding attention window (0: none)
	embed            string
	embedShape       []int
	positions        string // a learned position table [positions][D]; "" for RoPE
	posShape         []int
	rope             []float32 // RoPE inverse frequencies (hd/2), nil without RoPE
	layers           []layerDesc
	final            normW
	// head maps the final hidden states to logits (or to a reward head's labels); its weight is
	// the embedding when the two are tied.
	head   proj
	labels int // >0: a sequence-classification score head
	// loraTargets maps the short names a LoRA config may use to module suffixes (nil: the family
	// has no LoRA targets).
	loraTargets map[string]string
}

// tensors lists every tensor the description reads, with its shape.
func (d *desc) tensors() map[string][]int {
	t := map[string][]int{d.embed: d.embedShape}
	if d.positions != "" {
		t[d.positions] = d.posShape
	}
	addNorm := func(n normW, size int) {
		t[n.w] = []int{size}
		if n.b != "" {
			t[n.b] = []int{size}
		}
	}
	addProj := func(p proj) {
		if p.conv {
			t[p.weight] = []int{p.in, p.out}
		} else {
			t[p.weight] = []int{p.out, p.in}
		}
		if p.bias != "" {
			t[p.bias] = []int{p.out}
		}
	}
	for _, l := range d.layers {
		addNorm(l.ln1, d.D)
		addNorm(l.ln2, d.D)
		for _, p := range l.qkv {
			addProj(p)
		}
		addProj(l.o)
		for _, p := range l.up {
			addProj(p)
		}
		addProj(l.down)
		if l.qNorm != "" {
			t[l.qNorm], t[l.kNorm] = []int{d.hd}, []int{d.hd}
		}
	}
	addNorm(d.final, d.D)
	if d.head.weight != d.embed {
		addProj(d.head)
	}
	return t
}

// projs lists every projection of the description, the head included.
func (d *desc) projs() []proj {
	var out []proj
	for _, l := range d.layers {
		out = append(append(append(out, l.qkv...), l.o), append(l.up, l.down)...)
	}
	return append(out, d.head)
}

// linearNames lists the modules (weight names without ".weight") stored as torch.nn.Linear:
// the ones LoRA can adapt.
func (d *desc) linearNames() map[string]proj {
	out := map[string]proj{}
	for _, p := range d.projs() {
		if !p.conv {
			out[p.weight[:len(p.weight)-len(".weight")]] = p
		}
	}
	return out
}

// headFor returns the output head: the score head of a reward model, an untied lm_head, or the
// embedding read as the head.
func headFor(c *hf.Config, lmHead, embed string) proj {
	switch {
	case c.NumLabels > 0:
		return proj{weight: "score.weight", out: c.NumLabels, in: c.HiddenSize}
	case !c.TieWordEmbeddings:
		return proj{weight: lmHead, out: c.VocabSize, in: c.HiddenSize}
	}
	return proj{weight: embed, out: c.VocabSize, in: c.HiddenSize}
}

// ropeFreqs returns the RoPE inverse frequencies of c (hd/2 of them for head size hd), with
// llama3 scaling if asked.
func ropeFreqs(c *hf.Config) []float32 {
	hd, theta, typ := c.HeadDim, c.Rope.Theta, c.Rope.Type
	factor, low, high, origMax := c.Rope.Factor, c.Rope.LowFreqFactor, c.Rope.HighFreqFactor, c.Rope.OriginalMaxPositions
	out := make([]float32, hd/2)
	for i := range out {
		f := 1 / math.Pow(theta, float64(2*i)/float64(hd))
		if typ == "llama3" {
			lowWavelen := float64(origMax) / low
			highWavelen := float64(origMax) / high
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen > lowWavelen:
				f /= factor
			case wavelen >= highWavelen:
				smooth := (float64(origMax)/wavelen - low) / (high - low)
				f = (1-smooth)*f/factor + smooth*f
			}
		}
		out[i] = float32(f)
	}
	return out
}

// gatedLayer is the block of the LLaMA family and its descendants: RMSNorm, separate q/k/v
// projections (biases as the config says), o, and a SwiGLU MLP.
func gatedLayer(c *hf.Config, l int, qkvBias bool) layerDesc {
	D, I := c.HiddenSize, c.IntermediateSize
	qd, kvd := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	p := fmt.Sprintf("model.layers.%d.", l)
	lin := func(name string, out, in int, bias bool) proj {
		pr := proj{weight: p + name + ".weight", out: out, in: in}
		if bias {
			pr.bias = p + name + ".bias"
		}
		return pr
	}
	return layerDesc{
		ln1: normW{w: p + "input_layernorm.weight"}, ln2: normW{w: p + "post_attention_layernorm.weight"},
		qkv:   []proj{lin("self_attn.q_proj", qd, D, qkvBias), lin("self_attn.k_proj", kvd, D, qkvBias), lin("self_attn.v_proj", kvd, D, qkvBias)},
		o:     lin("self_attn.o_proj", D, qd, c.OutputBias),
		up:    []proj{lin("mlp.gate_proj", I, D, c.MLPBias), lin("mlp.up_proj", I, D, c.MLPBias)},
		down:  lin("mlp.down_proj", D, I, c.MLPBias),
		scale: 1 / math.Sqrt(float64(c.HeadDim)),
	}
}

// gatedDesc is the rest of a LLaMA-family description around its layers.
func gatedDesc(c *hf.Config, layers []layerDesc) *desc {
	return &desc{norm: rmsNormKind, act: actSwiGLU, eps: c.NormEps,
		D: c.HiddenSize, H: c.NumHeads, Hkv: c.NumKVHeads, hd: c.HeadDim, I: c.IntermediateSize, V: c.VocabSize,
		window: c.SlidingWindow, embed: "model.embed_tokens.weight", embedShape: []int{c.VocabSize, c.HiddenSize},
		rope: ropeFreqs(c), layers: layers, final: normW{w: "model.norm.weight"},
		head: headFor(c, "lm_head.weight", "model.embed_tokens.weight"), labels: c.NumLabels,
		loraTargets: map[string]string{"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
			"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
