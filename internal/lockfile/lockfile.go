// Package lockfile gives a process exclusive use of a run directory, so that two commands
// resuming the same run cannot both append to its journal and lose records.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Name is the lock file inside a locked directory.
const Name = ".lock"

// ErrBusy is returned, wrapped with the directory and holder, when another process holds the lock.
var ErrBusy = errors.New("in use by another process")

// Lock is a held lock; Release gives it up (the operating system also does when the process dies).
type Lock struct{ f *os.File }

// Acquire takes the lock of dir without waiting, creating dir if needed.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, Name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lock(f); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%s: %w (pid %s); wait for it to finish or stop it first", dir, ErrBusy, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("%s: locking: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f: f}, nil
}

// Release gives the lock up; it is safe on a nil Lock and more than once.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	unlock(l.f)
	l.f.Close()
	l.f = nil
}
