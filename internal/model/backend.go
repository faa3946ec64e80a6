package model

import (
	"os"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
)

// defaultBackend is simplego with an unbounded worker pool: GoMLX v0.26's default pool
// deadlocks on 2-core machines, and unbounded was also the fastest setting
// (docs/ENGINE-NOTES.md, simplego's parallelism).
const defaultBackend = "go:parallelism=-1"

var stdoutMu sync.Mutex

// newXLA opens an XLA backend with cyclealign's client options; set in builds with -tags xla.
var newXLA func(config string) (backends.Backend, error)

// NewBackend opens the compute backend: $GOMLX_BACKEND when set (e.g. "xla:cuda" in a build
// with -tags xla), else simplego, the pure-Go CPU backend.
func NewBackend() (backends.Backend, error) {
	if cfg, ok := os.LookupEnv(backends.ConfigEnvVar); ok && cfg != "" {
		if newXLA != nil && (strings.HasPrefix(cfg, "xla:") || strings.HasPrefix(cfg, "stablehlo:")) {
			return newXLA(cfg)
		}
		return backends.NewWithConfig(cfg)
	}
	// simplego prints its parallelism setting on stdout, which would corrupt --json output.
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	saved := os.Stdout
	if devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		os.Stdout = devnull
		defer devnull.Close()
	}
	defer func() { os.Stdout = saved }()
	return backends.NewWithConfig(defaultBackend)
}
