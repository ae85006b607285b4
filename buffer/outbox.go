package buffer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hearth-energy/hearth"
)

// Append stores a batch of readings in one transaction (group commit: call
// it once per poll cycle, not once per reading) and returns copies with Seq
// set and Time truncated to the stored millisecond precision in UTC. Seqs
// are consecutive within a batch and higher than any seq assigned before.
// A Seq set by the caller is ignored; the copies share their Points maps
// with the input. On error nothing of the batch is stored.
//
// When the disk is full the error wraps ErrDiskFull and the batch is
// counted as refused; the first Append that succeeds afterwards reserves a
// seq for each refused reading, just below its own batch, and records a gap
// event (reason "disk_full") for that range in the same transaction. After
// committing, Append enforces the quota (see EnforceQuota); a failure to do
// so is logged, not returned, since the batch itself is stored.
func (s *Store) Append(readings []hearth.Reading) ([]hearth.Reading, error) {
	if len(readings) == 0 {
		return nil, nil
	}
	// Encode before the transaction, to hold the write lock briefly.
	payloads := make([]string, len(readings))
	for i, r := range readings {
		b, err := json.Marshal(r.Points)
		if err != nil {
			return nil, fmt.Errorf("append readings: encode points of %s: %w", r.Device, err)
		}
		payloads[i] = string(b)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]hearth.Reading, len(readings))
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		if err := s.reportLost(ctx, tx); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx,
			"INSERT INTO readings (device, ts, clock, boot, mono_ms, payload) VALUES (?, ?, ?, ?, ?, ?)")
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, r := range readings {
			ms := toMillis(r.Time)
			res, err := stmt.ExecContext(ctx, r.Device, ms, string(r.Clock), r.Boot, r.MonoMS, payloads[i])
			if err != nil {
				return err
			}
			seq, err := res.LastInsertId()
			if err != nil {
				return err
			}
			out[i] = r
			out[i].Seq = uint64(seq)
			out[i].Time = fromMillis(ms)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrDiskFull) {
			s.lost.add(readings)
		}
		return nil, fmt.Errorf("append %d readings: %w", len(readings), err)
	}
	s.lost.n = 0
	if err := s.enforceQuotaLocked(); err != nil {
		s.log.Error("buffer quota", "err", err)
	}
	return out, nil
}

// reportLost reserves seqs for the readings refused for a full disk and
// records them as a gap, inside the transaction that appends the next
// batch. The reservation raises the readings table's AUTOINCREMENT
// high-water mark, so no reading is ever given one of those seqs.
func (s *Store) reportLost(ctx context.Context, tx *sql.Tx) error {
	if s.lost.n == 0 {
		return nil
	}
	var last int64
	switch err := tx.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = 'readings'").Scan(&last); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, "INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)", s.lost.n); err != nil {
			return fmt.Errorf("reserve seqs: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read last seq: %w", err)
	default:
		if _, err := tx.ExecContext(ctx, "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'readings'", s.lost.n); err != nil {
			return fmt.Errorf("reserve seqs: %w", err)
		}
	}
	from, to := s.lost.from, s.lost.to
	return s.insertJSONEvent(ctx, tx, EventGap, Gap{
		FromSeq: uint64(last + 1), ToSeq: uint64(last + s.lost.n), Reason: GapDiskFull,
		Readings: s.lost.n, FromTS: &from, ToTS: &to,
	})
}

const readingCols = "seq, device, ts, clock, boot, mono_ms, payload"

// Pending returns up to limit unacked readings, oldest (lowest seq) first.
// limit must be positive.
func (s *Store) Pending(limit int) ([]hearth.Reading, error) {
	return s.PendingAfter(0, limit)
}

// PendingAfter returns up to limit unacked readings with seq greater than
// afterSeq, in ascending seq order: pass the last seq of one page to get the
// next. limit must be positive.
func (s *Store) PendingAfter(afterSeq uint64, limit int) ([]hearth.Reading, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending readings: limit %d is not positive", limit)
	}
	if afterSeq >= math.MaxInt64 {
		return nil, nil // SQLite rowids stop at MaxInt64
	}
	rs, err := s.queryReadings(
		"SELECT "+readingCols+" FROM readings WHERE seq > ? ORDER BY seq LIMIT ?", int64(afterSeq), limit)
	if err != nil {
		return nil, fmt.Errorf("pending readings after %d: %w", afterSeq, err)
	}
	return rs, nil
}

// Newest returns the newest limit unacked readings in ascending seq order,
// for sending live data before the backlog. limit must be positive.
func (s *Store) Newest(limit int) ([]hearth.Reading, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("newest readings: limit %d is not positive", limit)
	}
	rs, err := s.queryReadings(
		"SELECT * FROM (SELECT "+readingCols+" FROM readings ORDER BY seq DESC LIMIT ?) ORDER BY seq", limit)
	if err != nil {
		return nil, fmt.Errorf("newest readings: %w", err)
	}
	return rs, nil
}

func (s *Store) queryReadings(query string, args ...any) ([]hearth.Reading, error) {
	rows, err := s.db.Query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []hearth.Reading
	for rows.Next() {
		var (
			r       hearth.Reading
			seq, ms int64
			clock   string
			payload []byte
			points  map[string]hearth.Point
		)
		if err := rows.Scan(&seq, &r.Device, &ms, &clock, &r.Boot, &r.MonoMS, &payload); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(payload, &points); err != nil {
			return nil, fmt.Errorf("decode points of seq %d: %w", seq, err)
		}
		r.Seq = uint64(seq)
		r.Time = fromMillis(ms)
		r.Clock = hearth.ClockState(clock)
		r.Points = points
		out = append(out, r)
	}
	return out, rows.Err()
}

// Ack deletes the readings with the given seqs, in one transaction, once
// the broker has acknowledged them. Seqs that are not pending (already
// acked, or never assigned) are ignored, so acking twice is harmless.
func (s *Store) Ack(seqs []uint64) error {
	if err := s.deleteIDs("DELETE FROM readings WHERE seq = ?", seqs); err != nil {
		return fmt.Errorf("ack %d readings: %w", len(seqs), err)
	}
	return nil
}

// Event is something that happened on the gateway (a trip, a setpoint
// outcome, a gap, a corrupt buffer) and must reach the cloud. ID is
// assigned by the store, strictly increasing and never reused.
type Event struct {
	ID   uint64
	Time time.Time // stored with millisecond precision, in UTC
	Type string
	Data json.RawMessage // a JSON value, or nil
}

// AppendEvent stores ev and returns it with ID set, Time stamped now if it
// was zero, and Time truncated to milliseconds in UTC. Type must be
// non-empty and Data, if any, valid JSON.
func (s *Store) AppendEvent(ev Event) (Event, error) {
	if ev.Type == "" {
		return Event{}, errors.New("append event: empty type")
	}
	var data any // NULL for no data
	if len(ev.Data) > 0 {
		if !json.Valid(ev.Data) {
			return Event{}, fmt.Errorf("append %s event: data is not valid JSON", ev.Type)
		}
		data = string(ev.Data)
	}
	if ev.Time.IsZero() {
		ev.Time = s.now()
	}
	ms := toMillis(ev.Time)
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO events (ts, type, payload) VALUES (?, ?, ?)", ms, ev.Type, data)
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		ev.ID = uint64(id)
		return nil
	})
	if err != nil {
		return Event{}, fmt.Errorf("append %s event: %w", ev.Type, err)
	}
	ev.Time = fromMillis(ms)
	return ev, nil
}

// PendingEvents returns up to limit unacked events, oldest (lowest ID)
// first. limit must be positive.
func (s *Store) PendingEvents(limit int) ([]Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending events: limit %d is not positive", limit)
	}
	rows, err := s.db.Query("SELECT id, ts, type, payload FROM events ORDER BY id LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("pending events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var (
			ev     Event
			id, ms int64
			data   []byte
		)
		if err := rows.Scan(&id, &ms, &ev.Type, &data); err != nil {
			return nil, fmt.Errorf("pending events: %w", err)
		}
		ev.ID = uint64(id)
		ev.Time = fromMillis(ms)
		if data != nil {
			ev.Data = json.RawMessage(data)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending events: %w", err)
	}
	return out, nil
}

// AckEvents deletes the events with the given IDs, in one transaction.
// Unknown IDs are ignored.
func (s *Store) AckEvents(ids []uint64) error {
	if err := s.deleteIDs("DELETE FROM events WHERE id = ?", ids); err != nil {
		return fmt.Errorf("ack %d events: %w", len(ids), err)
	}
	return nil
}

func (s *Store) deleteIDs(query string, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	return s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, query)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, id := range ids {
			if id > math.MaxInt64 {
				continue // cannot be a rowid
			}
			if _, err := stmt.ExecContext(ctx, int64(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// inTx runs fn in a write transaction (BEGIN IMMEDIATE, from the DSN) and
// commits it, or rolls it back if fn fails. Errors for a full disk wrap
// ErrDiskFull.
func (s *Store) inTx(fn func(ctx context.Context, tx *sql.Tx) error) error {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.noteFull(fmt.Errorf("begin: %w", err))
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		return s.noteFull(err)
	}
	if err := tx.Commit(); err != nil {
		return s.noteFull(fmt.Errorf("commit: %w", err))
	}
	s.commits.Add(1)
	s.diskFull.Store(false)
	return nil
}

// noteFull classifies err and remembers whether the disk was full.
func (s *Store) noteFull(err error) error {
	err = classify(err)
	if errors.Is(err, ErrDiskFull) {
		s.diskFull.Store(true)
	}
	return err
}
