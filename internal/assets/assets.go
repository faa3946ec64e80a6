// Package assets holds what the embedded default is made of: the HH-RLHF sample (MIT, with its
// licence), and the base model (with its tokenizer) the project pre-trains and the demo's
// evaluator reward model it trains with scripts/make-assets.sh, their sources recorded in
// models/SOURCES.md. They are compiled into the binary and unpacked on first use.
package assets

import (
	"bytes"
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed hh-rlhf models
var files embed.FS

// HHFile is the embedded HH-RLHF sample's path inside the unpacked directory.
const HHFile = "hh-rlhf/harmless-base-test.shared.jsonl.gz"

// Unpack writes the embedded files under dir (skipping files already there with the same
// content, so a cache left by an older binary is brought up to date) and returns dir.
func Unpack(dir string) (string, error) {
	err := fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, path)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		if old, err := os.ReadFile(target); err == nil && bytes.Equal(old, b) {
			return nil
		}
		tmp := target + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, target)
	})
	return dir, err
}

// DefaultDir is where the embedded default is unpacked: the user cache directory.
func DefaultDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "cyclealign", "default")
}
