package buffer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLockDirRefusesASecondHolder: while one holder has the data
// directory, a second LockDir fails at once and names the holder's pid;
// once it is released, the directory can be locked again.
func TestLockDirRefusesASecondHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // created by LockDir
	first, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir)
	if err == nil {
		t.Fatal("a second LockDir on a held data directory succeeded")
	}
	if want := "another hearth (pid " + strconv.Itoa(os.Getpid()) + ") holds " + dir; !strings.Contains(err.Error(), want) {
		t.Errorf("second LockDir: %v; want it to say %q", err, want)
	}
	first.Release()
	first.Release() // twice is harmless
	again, err := LockDir(dir)
	if err != nil {
		t.Fatalf("LockDir after Release: %v", err)
	}
	again.Release()
}
