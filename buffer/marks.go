package buffer

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// High-water marks kept beside the buffer, in the State file (which a
// corrupt database does not take along): a bound above every seq and event
// id the database ever handed out. A fresh database (the old one was
// corrupt and moved aside, or is gone) starts above them, so the cloud,
// which already holds the old seqs and ids and drops repeats as
// duplicates, never sees one again.
//
// The marks run ahead by markLead and are raised when a commit brings the
// highest seq or id within markLead/2 of them, so the State file is
// written (and synced) once in tens of thousands of seqs, and the marks
// stay above everything handed out as long as no single commit takes more
// than markLead/2 (a commit takes a poll cycle's readings, or one
// reservation of a thousand seqs).
const (
	metaSeqMark   = "buffer.seq_mark"
	metaEventMark = "buffer.event_mark"
	markLead      = 100_000
)

// marks is the store's copy of the two marks, and the State holding them.
type marks struct {
	st         *State
	seq, event uint64 // as written to st
}

// load reads the marks from the State file.
func (m *marks) load() error {
	var err error
	if m.seq, err = m.read(metaSeqMark); err != nil {
		return err
	}
	m.event, err = m.read(metaEventMark)
	return err
}

func (m *marks) read(key string) (uint64, error) {
	v, ok, err := m.st.Meta(key)
	if err != nil || !ok || v == "" {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("state %s: bad value %q", key, v)
	}
	return n, nil
}

// highs returns the highest seq handed out (stored, or reserved) and the
// highest event id, as the database says.
func highs(ctx context.Context, q querier) (seq, event uint64, err error) {
	var s, r, e int64
	err = q.QueryRowContext(ctx, `SELECT
		(SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'readings'),
		(SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta WHERE key = ?),
		(SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events')`, metaSeqReserved).Scan(&s, &r, &e)
	if err != nil {
		return 0, 0, fmt.Errorf("read high-water marks: %w", err)
	}
	return uint64(max(s, r)), uint64(e), nil
}

// startAbove makes a fresh database hand out seqs and event ids above the
// marks. It runs before anything is written to it.
func (s *Store) startAbove(ctx context.Context) error {
	m := s.marks
	if m == nil || (m.seq == 0 && m.event == 0) {
		return nil
	}
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		if err := raiseSequence(ctx, tx, "readings", m.seq); err != nil {
			return err
		}
		return raiseSequence(ctx, tx, "events", m.event)
	})
	if err != nil {
		return fmt.Errorf("start above the high-water marks: %w", err)
	}
	s.log.Warn("fresh buffer starts above the high-water marks kept beside it", "seq_after", m.seq, "event_id_after", m.event)
	return nil
}

// highsSeen is the highest seq and event id a transaction committed; ok
// false when the store keeps no marks, or they could not be read.
type highsSeen struct {
	seq, event uint64
	ok         bool
}

// highsIn reads the highs in the transaction q, when the store keeps marks.
func (s *Store) highsIn(ctx context.Context, q querier) highsSeen {
	if s.marks == nil {
		return highsSeen{}
	}
	seq, ev, err := highs(ctx, q)
	if err != nil {
		s.log.Warn("buffer: high-water marks not checked", "err", err)
		return highsSeen{}
	}
	return highsSeen{seq, ev, true}
}

// keepMarks raises the marks in the State file when the highs just
// committed come within markLead/2 of them. A failed write is logged and
// retried at the next commit.
func (s *Store) keepMarks(h highsSeen) {
	m := s.marks
	if m == nil || !h.ok {
		return
	}
	s.markMu.Lock()
	defer s.markMu.Unlock()
	seq, ev := h.seq, h.event
	for _, k := range []struct {
		key  string
		high uint64
		mark *uint64
	}{{metaSeqMark, seq, &m.seq}, {metaEventMark, ev, &m.event}} {
		if k.high+markLead/2 < *k.mark {
			continue
		}
		next := k.high + markLead
		if err := m.st.setLocal(k.key, strconv.FormatUint(next, 10)); err != nil {
			s.log.Warn("buffer: high-water mark not written", "key", k.key, "err", err)
			continue
		}
		*k.mark = next
	}
}
