package lockfile

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestSecondHolderIsRefusedUntilRelease(t *testing.T) {
	dir := t.TempDir()
	a, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second Acquire: %v; want ErrBusy naming the directory and holder pid", err)
	}
	a.Release()
	a.Release()
	b, err := Acquire(dir)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	b.Release()
}

// TestAnotherProcessIsRefused runs this test binary again as a child that tries the lock.
func TestAnotherProcessIsRefused(t *testing.T) {
	if dir := os.Getenv("LOCKFILE_CHILD_DIR"); dir != "" {
		_, err := Acquire(dir)
		if errors.Is(err, ErrBusy) {
			os.Exit(3)
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	cmd := exec.Command(os.Args[0], "-test.run", "TestAnotherProcessIsRefused")
	cmd.Env = append(os.Environ(), "LOCKFILE_CHILD_DIR="+dir)
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child process: %v; want it refused (exit 3)", err)
	}
}
