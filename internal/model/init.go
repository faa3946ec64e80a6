package model

import (
	"math/rand/v2"
	"strings"

	"github.com/cyclealign/cyclealign/internal/hf"
)

// InitTensors returns freshly initialised weights for cfg, as transformers' _init_weights
// does: normal(0, std) for matrices and embeddings, ones for norm weights, zeros for biases.
// The same seed gives the same weights.
func InitTensors(cfg *hf.Config, std float64, seed uint64) (map[string]*hf.Tensor, error) {
	d, err := describe(cfg, func(string) bool { return false })
	if err != nil {
		return nil, err
	}
	shapes := d.tensors()
	dt := hf.DTypeOf(cfg.DType)
	out := map[string]*hf.Tensor{}
	for _, name := range sortedKeys(shapes) {
		t := &hf.Tensor{Shape: shapes[name], Stored: dt}
		t.Data = make([]float32, t.NumElements())
		// Seed per tensor name so adding a tensor does not shift every other one.
		rng := rand.New(rand.NewPCG(seed, hashName(name)))
		switch {
		case strings.HasSuffix(name, ".bias"):
		case IsNorm(name):
			for i := range t.Data {
				t.Data[i] = 1
			}
		default:
			for i := range t.Data {
				t.Data[i] = float32(rng.NormFloat64() * std)
			}
		}
		out[name] = t
	}
	return out, nil
}

// IsNorm reports whether a tensor is a normalisation weight (also used to exempt it from
// weight decay).
func IsNorm(name string) bool {
	for _, s := range []string{"norm", "ln_", "layernorm"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

func hashName(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
