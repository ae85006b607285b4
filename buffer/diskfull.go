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
var ErrDiskFull = hearth.ErrDiskFull

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

// lostReadings tracks the readings refused for a full disk. Those from
// Append never got a seq; once the disk has room the store reserves one seq
// for each (so seqs still count every reading ever taken) and reports the
// reserved range as a gap. Those from AppendWithSeq are reported by the
// range of their own seqs. Kept in memory only: there is no room to write
// it down, so a restart while the disk is full forgets it (their seqs, when
// they had some, are then reported as not stored, see ReserveSeqs).
type lostReadings struct {
	refused  int64 // since Open, for Stats
	n        int64 // without a seq, not yet reported as a gap
	from, to time.Time

	seqN               int64 // with a seq, not yet reported
	seqFrom, seqTo     uint64
	seqFromTS, seqToTS time.Time
}

func (l *lostReadings) add(rs []hearth.Reading, preset bool) {
	for _, r := range rs {
		t := r.Time.UTC().Truncate(time.Millisecond)
		l.refused++
		if preset {
			if l.seqN == 0 || t.Before(l.seqFromTS) {
				l.seqFromTS = t
			}
			if l.seqN == 0 || t.After(l.seqToTS) {
				l.seqToTS = t
			}
			if l.seqN == 0 {
				l.seqFrom = r.Seq
			}
			l.seqFrom, l.seqTo = min(l.seqFrom, r.Seq), max(l.seqTo, r.Seq)
			l.seqN++
			continue
		}
		if l.n == 0 || t.Before(l.from) {
			l.from = t
		}
		if l.n == 0 || t.After(l.to) {
			l.to = t
		}
		l.n++
	}
}

// reported forgets what reportLost wrote, once its transaction committed:
// the readings with seqs, and those without when unseq is set.
func (l *lostReadings) reported(unseq bool) {
	l.seqN, l.seqFrom, l.seqTo = 0, 0, 0
	if unseq {
		l.n = 0
	}
}
