package buffer

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/mattn/go-sqlite3"
)

// ErrDiskFull is wrapped by the errors of writes that failed because the
// file system has no room (SQLITE_FULL, ENOSPC). The store stays usable:
// reads work, and writes work again once there is room. Readings refused
// for it are reported by a gap event (reason "disk_full") written by the
// first Append that succeeds afterwards.
var ErrDiskFull = errors.New("buffer: disk full")

// classify wraps err with ErrDiskFull when it is one.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrDiskFull) || !isDiskFull(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrDiskFull, err)
}

func isDiskFull(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrFull {
		return true
	}
	return errors.Is(err, syscall.ENOSPC)
}

// lostReadings tracks the readings Append refused for a full disk. They
// never got a seq; once the disk has room the store reserves one seq for
// each (so seqs still count every reading ever taken) and reports the
// reserved range as a gap. Kept in memory only: there is no room to write
// it down, so a restart while the disk is full forgets the count.
type lostReadings struct {
	refused  int64 // since Open, for Stats
	n        int64 // not yet reported as a gap
	from, to time.Time
}

func (l *lostReadings) add(rs []hearth.Reading) {
	for _, r := range rs {
		t := r.Time.UTC().Truncate(time.Millisecond)
		if l.n == 0 || t.Before(l.from) {
			l.from = t
		}
		if l.n == 0 || t.After(l.to) {
			l.to = t
		}
		l.n++
		l.refused++
	}
}
