package blackbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"

	"github.com/cyclealign/cyclealign/internal/files"
)

// chatRequest is everything that determines a reply; its hash is the cache key. The API key
// and the server address are not part of it.
type chatRequest struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	Temperature float64   `json:"temperature"`
	MaxTokens   int       `json:"max_tokens"`
}

func (r chatRequest) key() string {
	b, _ := json.Marshal(r)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// cacheEntry is one stored exchange.
type cacheEntry struct {
	Key              string      `json:"key"`
	Request          chatRequest `json:"request"`
	Reply            string      `json:"reply"`
	PromptTokens     int         `json:"prompt_tokens"`
	CompletionTokens int         `json:"completion_tokens"`
}

// Cache stores exchanges on disk, one file per request hash. Files are written to a temporary
// name, fsynced and renamed, so concurrent runs sharing a directory only ever see whole entries.
type Cache struct{ dir string }

// OpenCache creates dir if needed.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Cache{dir: dir}, nil
}

func (c *Cache) path(key string) string { return filepath.Join(c.dir, key[:2], key+".json") }

func (c *Cache) get(key string) (*cacheEntry, bool) {
	if c == nil {
		return nil, false
	}
	b, err := os.ReadFile(c.path(key))
	if err != nil {
		return nil, false
	}
	var e cacheEntry
	if json.Unmarshal(b, &e) != nil || e.Key != key {
		return nil, false // a corrupt entry is a miss, and is overwritten
	}
	return &e, true
}

func (c *Cache) put(e *cacheEntry) error {
	if c == nil {
		return nil
	}
	p := c.path(e.Key)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return files.WriteAtomic(p, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}
