package cpu

import "math"

// RMSNorm sets out[r] = x[r] / sqrt(mean(x[r]²) + eps) · w for each row of d values, as
// transformers' LlamaRMSNorm does, and returns each row's 1/sqrt(mean(x²) + eps) (what the
// backward pass needs).
func RMSNorm(out, x, w []float32, d int, eps float64) []float32 {
	inv := make([]float32, len(x)/d)
	for r := range inv {
		row, o := x[r*d:(r+1)*d], out[r*d:(r+1)*d]
		inv[r] = float32(1 / math.Sqrt(float64(Dot(row, row))/float64(d)+eps))
		for i, v := range row {
			o[i] = v * inv[r] * w[i]
		}
	}
	return inv
}

// LayerNorm sets out[r] = (x[r] − mean) / sqrt(var + eps) · w + b for each row of d values.
func LayerNorm(out, x, w, b []float32, d int, eps float64) {
	for r := 0; r+d <= len(x); r += d {
		row, o := x[r:r+d], out[r:r+d]
		mean, inv := MeanInvStd(row, eps)
		for i, v := range row {
			o[i] = float32((float64(v)-mean)*inv)*w[i] + b[i]
		}
	}
}

// MeanInvStd returns the mean of x and 1/sqrt(var(x) + eps), LayerNorm's statistics.
func MeanInvStd(x []float32, eps float64) (mean, inv float64) {
	for _, v := range x {
		mean += float64(v)
	}
	mean /= float64(len(x))
	vr := 0.0
	for _, v := range x {
		dv := float64(v) - mean
		vr += dv * dv
	}
	return mean, 1 / math.Sqrt(vr/float64(len(x))+eps)
}

// AddBias adds b to every row of x (rows of len(b) values).
func AddBias(x, b []float32) {
	for r := 0; r+len(b) <= len(x); r += len(b) {
		row := x[r : r+len(b)]
		for i, v := range b {
			row[i] += v
		}
	}
}

// Add sets x += y elementwise.
func Add(x, y []float32) {
	y = y[:len(x)]
	for i, v := range y {
		x[i] += v
	}
}

// SwiGLU sets out[r] = silu(gate)·up for rows laid out as [gate (n) | up (n)].
func SwiGLU(out, gateUp []float32, n int) {
	for r := 0; (r+1)*2*n <= len(gateUp); r++ {
		g, u, o := gateUp[2*n*r:2*n*r+n], gateUp[2*n*r+n:2*n*(r+1)], out[n*r:n*(r+1)]
		for i, v := range g {
			o[i] = v / (1 + float32(math.Exp(float64(-v)))) * u[i]
		}
	}
}

// GELUTanh applies transformers' gelu_new / gelu_pytorch_tanh in place.
func GELUTanh(x []float32) {
	const c = 0.7978845608028654 // sqrt(2/π)
	for i, v := range x {
		f := float64(v)
		x[i] = float32(0.5 * f * (1 + math.Tanh(c*(f+0.044715*f*f*f))))
	}
}

// GELUErf applies the exact GELU in place.
func GELUErf(x []float32) {
	for i, v := range x {
		f := float64(v)
		x[i] = float32(0.5 * f * (1 + math.Erf(f/math.Sqrt2)))
	}
}

// LogSumExp is log Σ exp(x), computed stably in float64.
func LogSumExp(x []float32) float64 {
	mx := x[0]
	for _, v := range x {
		mx = max(mx, v)
	}
	s := 0.0
	for _, v := range x {
		s += math.Exp(float64(v - mx))
	}
	return float64(mx) + math.Log(s)
}

// LogSoftmaxAt is log softmax(logits)[k], computed in float64.
func LogSoftmaxAt(logits []float32, k int) float64 {
	return float64(logits[k]) - LogSumExp(logits)
}

// SoftmaxInPlace turns scores into probabilities.
func SoftmaxInPlace(x []float32) {
	mx := x[0]
	for _, v := range x {
		mx = max(mx, v)
	}
	s := float32(0)
	for i, v := range x {
		e := float32(math.Exp(float64(v - mx)))
		x[i] = e
		s += e
	}
	inv := 1 / s
	for i := range x {
		x[i] *= inv
	}
}
