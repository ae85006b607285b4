package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// LockFile is flocked in data_dir for an agent's whole life: one agent
// per data_dir. It holds the pid of the agent that has it.
const LockFile = "hearth.lock"

// ErrDirHeld is matched (errors.Is) by LockDir's error when another
// process holds the directory.
var ErrDirHeld = errors.New("data_dir held by another agent")

// heldError is LockDir's refusal: its message, matching ErrDirHeld.
type heldError struct{ msg string }

func (e *heldError) Error() string        { return e.msg }
func (e *heldError) Is(target error) bool { return target == ErrDirHeld }

// DirLock is the exclusive lock on a data directory.
type DirLock struct{ f *os.File }

// LockDir creates dir if need be and takes its lock without waiting.
// A second agent on the same data_dir would share the first one's buffer,
// MQTT session and diagnostics socket, and take each of them from it, so
// it is refused before it touches anything, with the first one's pid.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock data_dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &heldError{fmt.Sprintf("another hearth (pid %s) holds %s: stop that agent first (systemctl stop hearth), or give this one a data_dir of its own", lockHolder(path), dir)}
		}
		return nil, fmt.Errorf("lock data_dir %s: %w", dir, err)
	}
	// The lock holds without the pid: only a second agent's message
	// needs it, so a failure to write it is no reason to stop.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &DirLock{f: f}, nil
}

// lockHolder reads the pid the holder wrote into the lock file, waiting a
// moment for a holder that has just taken the lock; "unknown" if none.
func lockHolder(path string) string {
	for end := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 0 {
			return strconv.Itoa(pid)
		}
		if time.Now().After(end) {
			return "unknown"
		}
	}
}

// Release gives the lock up; nil-safe.
func (l *DirLock) Release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the last descriptor drops the flock
		l.f = nil
	}
}
