package buffer

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/hearth-energy/hearth"
)

// Append stores a batch of readings in one transaction (group commit: call
// it once per poll cycle, not once per reading) and returns copies with Seq
// set and Time truncated to the stored millisecond precision in UTC. Seqs
// are consecutive within a batch and higher than any seq assigned before.
// A Seq set by the caller is ignored; the copies share their Points maps
// with the input. On error nothing of the batch is stored. While seqs
// reserved with ReserveSeqs are neither stored nor released, Append fails:
// the store would have to choose between reusing them and skipping them.
//
// When the disk is full the error wraps ErrDiskFull and the batch is
// counted as refused; the first Append that succeeds afterwards reserves a
// seq for each refused reading, just below its own batch, and records a gap
// event (reason "disk_full") for that range in the same transaction. After
// committing, Append enforces the quota (see EnforceQuota); a failure to do
// so is logged, not returned, since the batch itself is stored.
func (s *Store) Append(readings []hearth.Reading) ([]hearth.Reading, error) {
	return s.appendBatch(readings, false)
}

// AppendWithSeq stores readings whose Seq the caller took from ReserveSeqs,
// in one transaction, and returns copies with Time truncated to the stored
// precision. Seqs must be strictly increasing, higher than every seq stored
// or given up before, and reserved. Like Append, it stores nothing on
// error; a batch refused for a full disk is remembered by its seq range,
// and the first write of readings that succeeds afterwards records a gap
// event (reason "disk_full") for that range.
func (s *Store) AppendWithSeq(readings []hearth.Reading) ([]hearth.Reading, error) {
	return s.appendBatch(readings, true)
}

func (s *Store) appendBatch(readings []hearth.Reading, preset bool) ([]hearth.Reading, error) {
	if len(readings) == 0 {
		return nil, nil
	}
	// Encode before the transaction, to hold the write lock briefly.
	payloads := make([]string, len(readings))
	for i, r := range readings {
		if preset && (r.Seq == 0 || r.Seq > math.MaxInt64 || i > 0 && r.Seq <= readings[i-1].Seq) {
			return nil, fmt.Errorf("append readings: seq %d of %s is zero, too large or not increasing", r.Seq, r.Device)
		}
		b, err := json.Marshal(r.Points)
		if err != nil {
			return nil, fmt.Errorf("append readings: encode points of %s: %w", r.Device, err)
		}
		payloads[i] = string(b)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if preset && readings[len(readings)-1].Seq > s.reserved {
		return nil, fmt.Errorf("append readings: seq %d was not reserved (reserved up to %d)", readings[len(readings)-1].Seq, s.reserved)
	}
	insert := "INSERT INTO readings (device, ts, clock, boot, mono_ms, payload) VALUES (?, ?, ?, ?, ?, ?)"
	if preset {
		insert = "INSERT INTO readings (device, ts, clock, boot, mono_ms, payload, seq) VALUES (?, ?, ?, ?, ?, ?, ?)"
	}
	out := make([]hearth.Reading, len(readings))
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		last, err := lastStored(ctx, tx)
		if err != nil {
			return err
		}
		if !preset && s.reserved > uint64(last) {
			return fmt.Errorf("seqs %d..%d are reserved: append them with AppendWithSeq or release them", last+1, s.reserved)
		}
		if preset && readings[0].Seq <= uint64(last) {
			return fmt.Errorf("seq %d is not above the last stored seq %d", readings[0].Seq, last)
		}
		// With seqs reserved, readings refused without one wait for the
		// next reservation to get theirs.
		if err := s.reportLost(ctx, tx, !preset); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, insert)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, r := range readings {
			ms := toMillis(r.Time)
			args := []any{r.Device, ms, string(r.Clock), r.Boot, r.MonoMS, payloads[i]}
			if preset {
				args = append(args, int64(r.Seq))
			}
			res, err := stmt.ExecContext(ctx, args...)
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
			s.lost.add(readings, preset)
		}
		return nil, fmt.Errorf("append %d readings: %w", len(readings), err)
	}
	s.lost.reported(!preset)
	if err := s.enforceQuotaLocked(); err != nil {
		s.log.Error("buffer quota", "err", err)
	}
	return out, nil
}

// reportLost records the readings refused for a full disk as gap events,
// inside the transaction of the next write that succeeds. Readings that
// had a seq (AppendWithSeq) are reported by their seq range. Readings that
// had none get one seq each, reserved above every seq assigned or reserved
// so far by raising the readings table's AUTOINCREMENT high-water mark, so
// that no reading is ever given one of those seqs.
func (s *Store) reportLost(ctx context.Context, tx *sql.Tx, unseq bool) error {
	l := &s.lost
	if l.seqN > 0 {
		from, to := l.seqFromTS, l.seqToTS
		if err := s.insertJSONEvent(ctx, tx, EventGap, Gap{
			FromSeq: l.seqFrom, ToSeq: l.seqTo, Reason: GapDiskFull,
			Readings: l.seqN, FromTS: &from, ToTS: &to,
		}); err != nil {
			return err
		}
	}
	if !unseq || l.n == 0 {
		return nil
	}
	last, err := lastStored(ctx, tx)
	if err != nil {
		return err
	}
	base := max(uint64(last), s.reserved)
	if err := setLastStored(ctx, tx, base+uint64(l.n)); err != nil {
		return fmt.Errorf("reserve seqs: %w", err)
	}
	from, to := l.from, l.to
	return s.insertJSONEvent(ctx, tx, EventGap, Gap{
		FromSeq: base + 1, ToSeq: base + uint64(l.n), Reason: GapDiskFull,
		Readings: l.n, FromTS: &from, ToTS: &to,
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

// AppendEvent stores ev and returns it with ID set, Time stamped now if it
// was zero, and Time truncated to milliseconds in UTC. Type must be
// non-empty and Data, if any, valid JSON.
func (s *Store) AppendEvent(ev hearth.Event) (hearth.Event, error) {
	if ev.Type == "" {
		return hearth.Event{}, errors.New("append event: empty type")
	}
	var data any // NULL for no data
	if len(ev.Data) > 0 {
		if !json.Valid(ev.Data) {
			return hearth.Event{}, fmt.Errorf("append %s event: data is not valid JSON", ev.Type)
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
		return hearth.Event{}, fmt.Errorf("append %s event: %w", ev.Type, err)
	}
	ev.Time = fromMillis(ms)
	return ev, nil
}

// PendingEvents returns up to limit unacked events, oldest (lowest ID)
// first. limit must be positive.
func (s *Store) PendingEvents(limit int) ([]hearth.Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending events: limit %d is not positive", limit)
	}
	rows, err := s.db.Query("SELECT id, ts, type, payload FROM events ORDER BY id LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("pending events: %w", err)
	}
	defer rows.Close()
	var out []hearth.Event
	for rows.Next() {
		var (
			ev     hearth.Event
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
// ErrDiskFull. The commit is not synced (synchronous=NORMAL): a power cut
// may roll it back.
func (s *Store) inTx(fn func(ctx context.Context, tx *sql.Tx) error) error {
	h, err := s.runTx(context.Background(), s.db, fn)
	if err == nil {
		s.keepMarks(h)
	}
	return err
}

// inDurableTx is inTx for a commit that must survive a power cut: it runs
// on the pinned connection with synchronous=FULL, so SQLite fsyncs the WAL
// (and, the first time, its directory) before the commit returns, which
// also makes every commit before it durable. Pinning the one connection
// keeps the setting to this transaction: nothing else can run on the
// connection between the two PRAGMAs.
func (s *Store) inDurableTx(fn func(ctx context.Context, tx *sql.Tx) error) error {
	if !syncs {
		return s.inTx(fn)
	}
	h, err := s.durableTx(fn)
	if err == nil {
		// With the connection given back: the marks' writer may wait on
		// a State whose SetMeta waits on the connection.
		s.keepMarks(h)
	}
	return err
}

func (s *Store) durableTx(fn func(ctx context.Context, tx *sql.Tx) error) (highsSeen, error) {
	ctx := context.Background()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return highsSeen{}, s.noteFull(fmt.Errorf("connect: %w", err))
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		return highsSeen{}, fmt.Errorf("synchronous full: %w", err)
	}
	h, err := s.runTx(ctx, conn, fn)
	if _, rerr := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); rerr != nil {
		// A connection left at FULL costs an fsync per commit; better
		// to drop it than keep it.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		s.log.Warn("buffer: restoring synchronous=NORMAL failed; reconnecting", "err", rerr)
	}
	return h, err
}

// beginner is a *sql.DB or a pinned *sql.Conn.
type beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// runTx runs fn in a transaction on db and commits it. It returns the
// highest seq and event id as committed, for the high-water marks, which
// its caller raises once the connection is free again.
func (s *Store) runTx(ctx context.Context, db beginner, fn func(ctx context.Context, tx *sql.Tx) error) (highsSeen, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return highsSeen{}, s.noteFull(fmt.Errorf("begin: %w", err))
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		return highsSeen{}, s.noteFull(err)
	}
	// Read in the transaction: the store has one connection.
	h := s.highsIn(ctx, tx)
	if err := tx.Commit(); err != nil {
		return highsSeen{}, s.noteFull(fmt.Errorf("commit: %w", err))
	}
	s.commits.Add(1)
	if s.diskFull.Swap(false) {
		keepReserve(s.path, s.reserveSize())
	}
	return h, nil
}

// noteFull classifies err and remembers whether the disk was full.
func (s *Store) noteFull(err error) error {
	err = classify(err)
	if errors.Is(err, ErrDiskFull) {
		s.diskFull.Store(true)
		// Give SQLite the reserve, so deletes and checkpoints can run and
		// the outbox can drain as soon as the uplink takes readings.
		if releaseReserve(s.path) {
			s.log.Warn("disk full: released the buffer's reserve file so the outbox can drain", "path", s.path)
			s.db.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
		}
	}
	return err
}
