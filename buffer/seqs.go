package buffer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/hearth-energy/hearth"
)

// GapNotStored is the reason of the gap recorded at Open for seqs that were
// reserved before the agent stopped without a clean shutdown (a crash, a
// kill, a power cut) and that are above every seq stored. Readings with
// such seqs were either delivered live, and the cloud has them, or lost
// with the process; the rest of the range was never used.
const GapNotStored = "not_stored"

// metaSeqReserved is the meta key of the highest seq reserved by
// ReserveSeqs and not yet released.
const metaSeqReserved = "seq_reserved"

// lastStored returns the readings table's AUTOINCREMENT high-water mark:
// the highest seq ever stored, or given up for a reading that was not
// (a disk_full or not_stored gap). 0 when there is none yet.
func lastStored(ctx context.Context, q querier) (int64, error) {
	var last int64
	err := q.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = 'readings'").Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read last seq: %w", err)
	}
	return last, nil
}

// setLastStored raises the high-water mark to seq, so that AUTOINCREMENT
// never hands out a seq at or below it.
func setLastStored(ctx context.Context, tx *sql.Tx, seq uint64) error {
	return raiseSequence(ctx, tx, "readings", seq)
}

// raiseSequence raises table's AUTOINCREMENT high-water mark to v.
func raiseSequence(ctx context.Context, tx *sql.Tx, table string, v uint64) error {
	res, err := tx.ExecContext(ctx, "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", int64(v), table)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", table, int64(v))
	return err
}

func setReserved(ctx context.Context, tx *sql.Tx, seq uint64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, metaSeqReserved, strconv.FormatUint(seq, 10))
	return err
}

// ReserveSeqs reserves the n seqs first..last, above every seq assigned,
// stored or reserved before, for readings the caller will deliver from
// memory and store with AppendWithSeq only if they are not delivered soon.
// The reservation is one small commit, synced to the medium before
// ReserveSeqs returns (the only fsync of the store's own, so reserve many
// at a time). It survives a power cut: until ReleaseSeqs says which were used, a restart treats the
// reserved seqs above the last stored one as lost and records a gap event
// (reason GapNotStored) for them at Open, and starts after them.
func (s *Store) ReserveSeqs(n int) (first, last uint64, err error) {
	if n <= 0 {
		return 0, 0, fmt.Errorf("reserve seqs: n %d is not positive", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Durable before any seq of the block is handed out: a reservation
	// rolled back by a power cut would give the next run the same seqs
	// again, and the cloud would drop its new readings as duplicates.
	err = s.inDurableTx(func(ctx context.Context, tx *sql.Tx) error {
		if err := s.reportLost(ctx, tx, true); err != nil {
			return err
		}
		stored, err := lastStored(ctx, tx)
		if err != nil {
			return err
		}
		base := max(uint64(stored), s.reserved)
		if base > math.MaxInt64-uint64(n) {
			return errors.New("seqs exhausted")
		}
		first, last = base+1, base+uint64(n)
		return setReserved(ctx, tx, last)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reserve %d seqs: %w", n, err)
	}
	s.lost.reported(true)
	s.reserved = last
	return first, last, nil
}

// ReleaseSeqs gives back the reserved seqs above used, which the caller
// never assigned, so that the next reservation (in this or the next run)
// starts right after used and the cloud sees no hole. The caller promises
// that every reserved seq up to used was delivered or stored. Call it at a
// clean shutdown, after storing what was not delivered.
func (s *Store) ReleaseSeqs(used uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if used > s.reserved {
		return fmt.Errorf("release seqs: %d was never reserved (reserved up to %d)", used, s.reserved)
	}
	var mark uint64
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		if err := s.reportLost(ctx, tx, false); err != nil {
			return err
		}
		stored, err := lastStored(ctx, tx)
		if err != nil {
			return err
		}
		mark = max(uint64(stored), used)
		if err := setLastStored(ctx, tx, mark); err != nil {
			return err
		}
		return setReserved(ctx, tx, mark)
	})
	if err != nil {
		return fmt.Errorf("release seqs above %d: %w", used, err)
	}
	s.lost.reported(false)
	s.reserved = mark
	return nil
}

// recoverReserved runs at Open: seqs reserved by a run that ended without
// ReleaseSeqs, above the last stored seq, are recorded as a gap (reason
// GapNotStored) and given up, so the next seq comes after them.
func (s *Store) recoverReserved(ctx context.Context) error {
	v, ok, err := s.Meta(metaSeqReserved)
	if err != nil || !ok {
		return err
	}
	reserved, err := strconv.ParseUint(v, 10, 64)
	if err != nil || reserved > math.MaxInt64 {
		return fmt.Errorf("meta %s: bad value %q", metaSeqReserved, v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved = reserved
	stored, err := lastStored(ctx, s.db)
	if err != nil || uint64(stored) >= reserved {
		return err // released at the last shutdown: nothing to write
	}
	err = s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		if err := s.insertJSONEvent(ctx, tx, EventGap, Gap{
			FromSeq: uint64(stored) + 1, ToSeq: reserved, Reason: GapNotStored,
		}); err != nil {
			return err
		}
		return setLastStored(ctx, tx, reserved)
	})
	if err != nil {
		return fmt.Errorf("recover reserved seqs: %w", err)
	}
	return nil
}

// Refuse counts readings the caller could not append because ReserveSeqs
// failed for a full disk, so they have no seq. Like readings Append refused,
// they are given seqs and reported as a disk_full gap by the first
// reservation or Append that succeeds afterwards.
func (s *Store) Refuse(readings []hearth.Reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost.add(readings, false)
}
