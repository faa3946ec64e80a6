//go:build !unix

package lockfile

import (
	"errors"
	"os"
)

// Elsewhere an exclusively created marker would outlive a killed process; without flock the
// lock is advisory only and always granted.
var errWouldBlock = errors.New("would block")

func lock(*os.File) error   { return nil }
func unlock(*os.File) error { return nil }
