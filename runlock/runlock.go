// Package runlock keeps one agent per gateway: exclusive locks (flock) on
// small files in a runtime directory, one per thing two agents must never
// share (the gateway id, the diagnostics socket, each device link), each
// holding a line that names its holder (pid, config). A lock is released
// when its holder exits, however it exits, so a lock file left on disk
// is never stale: only a lock that is held refuses.
package runlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrHeld is matched (errors.Is) by the error of an Acquire that another
// process holds.
var ErrHeld = errors.New("held by another agent")

// Holder is what a lock file says of the process that holds it.
type Holder struct {
	PID    int    `json:"pid"`
	Config string `json:"config,omitempty"` // the holder's config file
}

func (h Holder) String() string {
	switch {
	case h.PID == 0:
		return "unknown"
	case h.Config == "":
		return fmt.Sprintf("pid %d", h.PID)
	}
	return fmt.Sprintf("pid %d, config %s", h.PID, h.Config)
}

// HeldError is a lock that another process holds.
type HeldError struct {
	What   string // what the lock keeps, e.g. "gateway gw-1"
	Path   string // the lock file
	Holder Holder
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("another hearth (%s) holds %s (lock %s)", e.Holder, e.What, e.Path)
}

// Is makes a HeldError match ErrHeld.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is one held lock.
type Lock struct{ f *os.File }

// Set is the locks one agent holds; Release gives them all up.
type Set []*Lock

// Release gives every lock of the set up; nil-safe.
func (s Set) Release() {
	for _, l := range s {
		l.Release()
	}
}

// Acquire takes the lock named name in dir (creating dir and the file if
// need be) without waiting, and writes me into it. what says what the
// lock keeps, for the error another process gets. When another process
// holds it, the error is a *HeldError naming that process.
func Acquire(dir, name, what string, me Holder) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("lock %s: runtime folder: %w", what, err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{What: what, Path: path, Holder: readHolder(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	// The lock holds without the line: only another process's message
	// needs it.
	b, _ := json.Marshal(me)
	_ = f.Truncate(0)
	_, _ = f.WriteAt(append(b, '\n'), 0)
	return &Lock{f: f}, nil
}

// readHolder reads the line the holder wrote, waiting a moment for one
// that has just taken the lock.
func readHolder(path string) Holder {
	for end := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		var h Holder
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &h) == nil && h.PID > 0 {
			return h
		}
		if time.Now().After(end) {
			return Holder{}
		}
	}
}

// Release gives the lock up; nil-safe.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the last descriptor drops the flock
		l.f = nil
	}
}

// Name turns a key (a gateway id, a link) into a lock file name: the
// kind, then the key with every character outside [A-Za-z0-9._-] as '_',
// and ".lock".
func Name(kind, key string) string {
	var b strings.Builder
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return kind + "-" + b.String() + ".lock"
}

// CommandConfig returns the --config argument of process pid's command
// line (from /proc), or "" when it has none or cannot be read: what a
// process without a lock file (an older agent) was started with.
func CommandConfig(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
		if (a == "--config" || a == "-config") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
