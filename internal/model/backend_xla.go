//go:build xla

package model

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gomlx/go-xla/pkg/pjrt"
	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/xla"
)

// The XLA client's memory settings, so cyclealign can share a GPU with an inference server:
// PJRT's GPU client otherwise grabs 75% of the device's memory at start.
const (
	// PreallocateEnv: "true" lets XLA reserve its memory fraction up front (default false:
	// allocate as needed).
	PreallocateEnv = "CYCLEALIGN_XLA_PREALLOCATE"
	// MemoryFractionEnv caps the fraction of GPU memory XLA may use (default 0.9).
	MemoryFractionEnv = "CYCLEALIGN_XLA_MEMORY_FRACTION"
)

func init() {
	newXLA = func(config string) (backends.Backend, error) {
		pre, frac := false, float32(0.9)
		if v := os.Getenv(PreallocateEnv); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s=%q: want true or false", PreallocateEnv, v)
			}
			pre = b
		}
		if v := os.Getenv(MemoryFractionEnv); v != "" {
			f, err := strconv.ParseFloat(v, 32)
			if err != nil || f <= 0 || f > 1 {
				return nil, fmt.Errorf("%s=%q: want a fraction in (0, 1]", MemoryFractionEnv, v)
			}
			frac = float32(f)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(config, xla.BackendName+":"), "stablehlo:")
		opts := pjrt.NamedValuesMap{}
		if strings.Contains(strings.ToLower(name), "cuda") {
			opts["preallocate"], opts["memory_fraction"] = pre, frac
		}
		return xla.NewWithOptions(name, opts)
	}
}
