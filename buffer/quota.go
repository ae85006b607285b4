package buffer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hearth-energy/hearth"
)

// Event types the store records by itself.
const (
	// EventGap says that no reading with a seq in [from_seq, to_seq] will
	// be delivered from now on; its data is a Gap.
	EventGap = "gap"
	// EventEventsDropped says that the quota was so tight that undelivered
	// events had to go, after every reading and aggregate; its data is
	// {"from_id":…,"to_id":…,"events":…,"reason":"quota"}: the events with
	// IDs in that range are gone, and there were that many of them.
	EventEventsDropped = "events_dropped"
)

// Gap reasons.
const (
	GapQuota    = "quota"     // dropped to stay under buffer.max_bytes
	GapDiskFull = "disk_full" // refused by Append while the disk was full
)

// Gap is the data of a gap event. The range is exact: every seq in it that
// the cloud has not received will never come, and every seq outside it is
// still pending (as a reading or inside an aggregate) or was delivered.
// Readings is how many readings the range stood for; FromTS and ToTS are
// the reading times at its ends, when known.
type Gap struct {
	FromSeq  uint64     `json:"from_seq"`
	ToSeq    uint64     `json:"to_seq"`
	Reason   string     `json:"reason"`
	Readings int64      `json:"readings"`
	FromTS   *time.Time `json:"from_ts,omitempty"`
	ToTS     *time.Time `json:"to_ts,omitempty"`
}

// Names in the counters table.
const (
	counterCompactions       = "compactions"
	counterReadingsCompacted = "readings_compacted"
	counterAggregatesDropped = "aggregates_dropped"
	counterReadingsDropped   = "readings_dropped"
	counterEventsDropped     = "events_dropped"
)

// Quota policy. Enforcement starts when the store is above quotaHigh
// percent of MaxBytes and goes on until it is at or below quotaLow, so that
// it runs now and then in bulk rather than a little on every Append.
const (
	quotaHigh          = 80
	quotaLow           = 70
	compactChunk       = 4096 // readings compacted in one transaction
	dropAggregateChunk = 256  // aggregates dropped in one transaction (plus overlaps)
	dropReadingChunk   = 1024 // readings dropped in one transaction
	dropEventChunk     = 256  // events dropped in one transaction
	walMinBytes        = 32 << 10
	walMaxBytes        = 4 << 20
	slackPercent       = 10 // free pages kept for reuse, in percent of the budget
)

// sizeWAL bounds the WAL to a sixteenth of the quota (between 32 KiB and
// SQLite's usual 4 MiB): the auto-checkpoint runs at that size, and the
// file is cut back to it after a bigger transaction. The rest of the quota
// is the budget for the database's pages. The pragmas are per connection;
// the store keeps its one.
func (s *Store) sizeWAL(ctx context.Context) error {
	limit := int64(walMaxBytes)
	if s.maxBytes > 0 {
		limit = min(walMaxBytes, max(walMinBytes, s.maxBytes/16), s.maxBytes/2)
	}
	var pageSize int64
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return fmt.Errorf("read page size: %w", err)
	}
	s.pageSize = pageSize
	s.budget = s.maxBytes - limit
	// PRAGMA takes no bind parameters; both are integers we computed.
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", limit/pageSize)); err != nil {
		return fmt.Errorf("set wal_autocheckpoint: %w", err)
	}
	var got int64
	if err := s.db.QueryRowContext(ctx, fmt.Sprintf("PRAGMA journal_size_limit = %d", limit)).Scan(&got); err != nil {
		return fmt.Errorf("set journal_size_limit: %w", err)
	}
	return nil
}

// EnforceQuota brings the store's live pages (page_count minus the free
// list) under its budget (MaxBytes less the WAL's allowance) if they are
// above 80% of it, down to 70%, by these steps in order, each repeated
// while it helps:
//
//  1. compact the oldest readings older than CompactAge into per-minute
//     aggregates;
//  2. drop the oldest aggregates, recording a gap event (reason "quota");
//  3. drop the oldest readings, recording a gap event;
//  4. as the very last resort, drop the oldest events, recording an
//     events_dropped event.
//
// Freed pages beyond a slack of 10% of the budget are then handed back to
// the file system with PRAGMA incremental_vacuum; the slack is kept because
// the next appends reuse free pages in place, while releasing them and
// growing the file again costs writes. The store never runs a full VACUUM.
// Append calls it after every commit. It returns an error, and leaves the
// store working, if the quota cannot be met or a step fails.
func (s *Store) EnforceQuota() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enforceQuotaLocked()
}

func (s *Store) enforceQuotaLocked() error {
	if s.maxBytes == 0 {
		ctx := context.Background()
		_, free, err := s.liveBytes(ctx)
		if err != nil {
			return fmt.Errorf("release free pages: %w", err)
		}
		return s.releaseSlack(ctx, free)
	}
	ctx := context.Background()
	used, free, err := s.liveBytes(ctx)
	if err != nil {
		return fmt.Errorf("enforce quota: %w", err)
	}
	if used*100 <= s.budget*quotaHigh {
		return s.releaseSlack(ctx, free)
	}
	stuck := 0 // steps in a row that did not shrink the store
	for used*100 > s.budget*quotaLow {
		did, err := s.quotaStep(ctx)
		if err != nil {
			return fmt.Errorf("enforce quota: %w", err)
		}
		if !did {
			return fmt.Errorf("enforce quota: %d bytes live of a %d budget, with nothing left to compact or drop", used, s.budget)
		}
		prev := used
		if used, free, err = s.liveBytes(ctx); err != nil {
			return fmt.Errorf("enforce quota: %w", err)
		}
		if used >= prev {
			if stuck++; stuck >= 3 {
				return fmt.Errorf("enforce quota: %d bytes live of a %d budget, and dropping more does not shrink the store", used, s.budget)
			}
		} else {
			stuck = 0
		}
	}
	return s.releaseSlack(ctx, free)
}

// liveBytes returns the bytes in pages that hold data, and the number of
// free pages.
func (s *Store) liveBytes(ctx context.Context) (live, freePages int64, err error) {
	var pages int64
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return 0, 0, fmt.Errorf("page count: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&freePages); err != nil {
		return 0, 0, fmt.Errorf("free list: %w", err)
	}
	return (pages - freePages) * s.pageSize, freePages, nil
}

// quotaStep takes the first of the quota's steps that has anything to work
// on, and reports whether it did anything.
func (s *Store) quotaStep(ctx context.Context) (bool, error) {
	for _, step := range []func(context.Context) (bool, error){
		s.compactOldest, s.compactRecent, s.dropOldestAggregates, s.dropOldestReadings, s.dropOldestEvents,
	} {
		did, err := step(ctx)
		if err != nil || did {
			return did, err
		}
	}
	return false, nil
}

// releaseSlack hands free pages beyond the slack back to the file system
// (the file shrinks at the next checkpoint). Without a quota the slack is
// the WAL's allowance.
func (s *Store) releaseSlack(ctx context.Context, freePages int64) error {
	slack := int64(walMaxBytes)
	if s.maxBytes > 0 {
		slack = s.budget * slackPercent / 100
	}
	excess := freePages - slack/s.pageSize
	if excess <= 0 {
		return nil
	}
	// PRAGMA takes no bind parameters; excess is an integer we computed.
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", excess)); err != nil {
		return s.noteFull(fmt.Errorf("incremental vacuum: %w", err))
	}
	s.commits.Add(1)
	return nil
}

// compactOldest replaces up to compactChunk of the oldest readings, those
// older than CompactAge, with aggregates. It takes readings in seq order
// and stops at the first one too young, so what it compacts is always a
// seq prefix of the readings: every pending reading has a higher seq than
// every aggregate.
func (s *Store) compactOldest(ctx context.Context) (bool, error) {
	return s.compactOlderThan(ctx, s.compactAge)
}

// compactRecent is the quota's second step: when nothing is as old as
// CompactAge, younger readings are compacted too (all but the last
// minCompactAge), since losing resolution is better than losing readings.
func (s *Store) compactRecent(ctx context.Context) (bool, error) {
	if s.compactAge <= minCompactAge {
		return false, nil
	}
	return s.compactOlderThan(ctx, minCompactAge)
}

// minCompactAge keeps the newest readings at full resolution whatever the
// quota: they are the ones about to be delivered.
const minCompactAge = 2 * time.Minute

// compactOlderThan replaces the oldest readings taken more than age ago
// with per-minute aggregates, one chunk at a time.
func (s *Store) compactOlderThan(ctx context.Context, age time.Duration) (bool, error) {
	cutoff := toMillis(s.now().Add(-age))
	did := false
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx,
			"SELECT seq, device, ts, clock, payload FROM readings ORDER BY seq LIMIT ?", compactChunk)
		if err != nil {
			return err
		}
		var (
			c    compactor
			last int64
			n    int64
		)
		for rows.Next() {
			var (
				seq, ms       int64
				device, clock string
				payload       []byte
				points        map[string]hearth.Point
			)
			if err := rows.Scan(&seq, &device, &ms, &clock, &payload); err != nil {
				rows.Close()
				return err
			}
			if ms >= cutoff {
				break
			}
			if err := json.Unmarshal(payload, &points); err != nil {
				rows.Close()
				return fmt.Errorf("decode points of seq %d: %w", seq, err)
			}
			c.add(uint64(seq), device, ms, hearth.ClockState(clock), points)
			last, n = seq, n+1
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM readings WHERE seq <= ?", last); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx,
			"INSERT INTO aggregates (seq_from, seq_to, device, minute, n, clock, points) VALUES (?, ?, ?, ?, ?, ?, ?)")
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, a := range c.finish() {
			points, err := json.Marshal(a.Points)
			if err != nil {
				return fmt.Errorf("encode aggregate of seq %d: %w", a.SeqFrom, err)
			}
			if _, err := stmt.ExecContext(ctx, int64(a.SeqFrom), int64(a.SeqTo), a.Device,
				toMillis(a.Time), a.N, string(a.Clock), string(points)); err != nil {
				return err
			}
		}
		if err := bump(ctx, tx, counterCompactions, 1); err != nil {
			return err
		}
		if err := bump(ctx, tx, counterReadingsCompacted, n); err != nil {
			return err
		}
		did = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("compact readings: %w", err)
	}
	return did, nil
}

// dropOldestAggregates deletes the oldest aggregates, and every aggregate
// whose range overlaps theirs (other devices' aggregates of the same
// minutes), so that the gap event's seq range holds nothing still pending.
func (s *Store) dropOldestAggregates(ctx context.Context) (bool, error) {
	did := false
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		var (
			from, cut, lastFrom int64
			count, readings     int64
			minMinute, maxMin   int64
		)
		take := func(query string, args ...any) (int, error) {
			rows, err := tx.QueryContext(ctx, query, args...)
			if err != nil {
				return 0, err
			}
			defer rows.Close()
			got := 0
			for rows.Next() {
				var sf, st, n, minute int64
				if err := rows.Scan(&sf, &st, &n, &minute); err != nil {
					return 0, err
				}
				if count == 0 {
					from, minMinute, maxMin = sf, minute, minute
				}
				cut = max(cut, st)
				lastFrom = sf
				minMinute, maxMin = min(minMinute, minute), max(maxMin, minute)
				count++
				readings += n
				got++
			}
			return got, rows.Err()
		}
		const cols = "SELECT seq_from, seq_to, n, minute FROM aggregates "
		if _, err := take(cols+"ORDER BY seq_from LIMIT ?", dropAggregateChunk); err != nil {
			return err
		}
		if count == 0 {
			return nil
		}
		for {
			got, err := take(cols+"WHERE seq_from > ? AND seq_from <= ? ORDER BY seq_from", lastFrom, cut)
			if err != nil {
				return err
			}
			if got == 0 {
				break
			}
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM aggregates WHERE seq_from <= ?", lastFrom); err != nil {
			return err
		}
		fromTS, toTS := fromMillis(minMinute), fromMillis(maxMin).Add(time.Minute-time.Millisecond)
		gap := Gap{FromSeq: uint64(from), ToSeq: uint64(cut), Reason: GapQuota, Readings: readings, FromTS: &fromTS, ToTS: &toTS}
		if err := s.insertJSONEvent(ctx, tx, EventGap, gap); err != nil {
			return err
		}
		if err := bump(ctx, tx, counterAggregatesDropped, count); err != nil {
			return err
		}
		did = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("drop aggregates: %w", err)
	}
	return did, nil
}

// dropOldestReadings deletes the oldest readings outright: the quota
// reaches here only when nothing is old enough to compact and no aggregate
// is left.
func (s *Store) dropOldestReadings(ctx context.Context) (bool, error) {
	did := false
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		var first, last, n, minTS, maxTS int64
		err := tx.QueryRowContext(ctx, `SELECT min(seq), max(seq), count(*), min(ts), max(ts)
			FROM (SELECT seq, ts FROM readings ORDER BY seq LIMIT ?)`, dropReadingChunk).
			Scan(nullable(&first), nullable(&last), &n, nullable(&minTS), nullable(&maxTS))
		if err != nil || n == 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM readings WHERE seq <= ?", last); err != nil {
			return err
		}
		fromTS, toTS := fromMillis(minTS), fromMillis(maxTS)
		gap := Gap{FromSeq: uint64(first), ToSeq: uint64(last), Reason: GapQuota, Readings: n, FromTS: &fromTS, ToTS: &toTS}
		if err := s.insertJSONEvent(ctx, tx, EventGap, gap); err != nil {
			return err
		}
		if err := bump(ctx, tx, counterReadingsDropped, n); err != nil {
			return err
		}
		did = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("drop readings: %w", err)
	}
	return did, nil
}

// dropOldestEvents deletes the oldest events and records how many went, in
// an events_dropped event of its own: the cloud learns that it lost events,
// if not which. An events_dropped event caught in a later drop is folded
// into the new one, so the pending ones always add up to every event lost.
// A lone event is kept.
func (s *Store) dropOldestEvents(ctx context.Context) (bool, error) {
	did := false
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		var total int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&total); err != nil {
			return err
		}
		if total <= 1 {
			return nil
		}
		rows, err := tx.QueryContext(ctx, "SELECT id, type, payload FROM events ORDER BY id LIMIT ?",
			min(dropEventChunk, total-1))
		if err != nil {
			return err
		}
		var d eventsDropped
		var last, real int64
		for rows.Next() {
			var (
				id      int64
				typ     string
				payload []byte
			)
			if err := rows.Scan(&id, &typ, &payload); err != nil {
				rows.Close()
				return err
			}
			if d.Events == 0 && d.FromID == 0 {
				d.FromID = id
			}
			last = id
			var prev eventsDropped
			if typ == EventEventsDropped && json.Unmarshal(payload, &prev) == nil && prev.FromID > 0 {
				d.FromID = min(d.FromID, prev.FromID)
				d.Events += prev.Events
				continue
			}
			d.Events++
			real++
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM events WHERE id <= ?", last); err != nil {
			return err
		}
		d.ToID, d.Reason = last, GapQuota
		if err := s.insertJSONEvent(ctx, tx, EventEventsDropped, d); err != nil {
			return err
		}
		if err := bump(ctx, tx, counterEventsDropped, real); err != nil {
			return err
		}
		did = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("drop events: %w", err)
	}
	return did, nil
}

// eventsDropped is the data of an events_dropped event: the events with
// IDs in [FromID, ToID] are gone, Events of them, counting those an earlier
// events_dropped event reported.
type eventsDropped struct {
	FromID int64  `json:"from_id"`
	ToID   int64  `json:"to_id"`
	Events int64  `json:"events"`
	Reason string `json:"reason"`
}

// nullable scans a possibly NULL integer into *p, leaving it 0 for NULL.
func nullable(p *int64) any { return &nullInt{p} }

type nullInt struct{ p *int64 }

func (n *nullInt) Scan(src any) error {
	var v sql.NullInt64
	if err := v.Scan(src); err != nil {
		return err
	}
	*n.p = v.Int64
	return nil
}

// insertJSONEvent records an event stamped now, inside tx.
func (s *Store) insertJSONEvent(ctx context.Context, tx *sql.Tx, typ string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", typ, err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO events (ts, type, payload) VALUES (?, ?, ?)",
		toMillis(s.now()), typ, string(b)); err != nil {
		return fmt.Errorf("record %s event: %w", typ, err)
	}
	return nil
}

// bump adds delta to a counter.
func bump(ctx context.Context, tx *sql.Tx, name string, delta int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO counters (name, value) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET value = value + excluded.value`, name, delta)
	if err != nil {
		return fmt.Errorf("count %s: %w", name, err)
	}
	return nil
}

func readCounters(ctx context.Context, tx *sql.Tx) (map[string]int64, error) {
	rows, err := tx.QueryContext(ctx, "SELECT name, value FROM counters")
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return nil, fmt.Errorf("read counters: %w", err)
		}
		out[name] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	return out, nil
}

// compactor folds readings, given in seq order, into aggregates: one per
// run of one device's consecutive readings that share a minute and a clock
// state. Runs, not buckets, so that a wall clock stepping back never makes
// two aggregates of one device overlap in seq.
type compactor struct {
	open map[string]*aggRun // by device
	done []hearth.Aggregate
}

type aggRun struct {
	agg    hearth.Aggregate
	points map[string]*pointAcc
}

type pointAcc struct {
	min, max, mean float64 // a running mean cannot overflow where a sum could
	n              int
	q              map[hearth.Quality]int
}

func (c *compactor) add(seq uint64, device string, ms int64, clock hearth.ClockState, points map[string]hearth.Point) {
	if c.open == nil {
		c.open = map[string]*aggRun{}
	}
	minute := ms - ms%60000
	if ms < 0 && ms%60000 != 0 {
		minute -= 60000
	}
	r := c.open[device]
	if r != nil && (toMillis(r.agg.Time) != minute || r.agg.Clock != clock) {
		c.close(r)
		r = nil
	}
	if r == nil {
		r = &aggRun{
			agg:    hearth.Aggregate{Device: device, Time: fromMillis(minute), SeqFrom: seq, Clock: clock},
			points: map[string]*pointAcc{},
		}
		c.open[device] = r
	}
	r.agg.SeqTo = seq
	r.agg.N++
	for name, p := range points {
		acc := r.points[name]
		if acc == nil {
			acc = &pointAcc{}
			r.points[name] = acc
		}
		if !p.Good() {
			if acc.q == nil {
				acc.q = map[hearth.Quality]int{}
			}
			acc.q[p.Quality]++
			continue
		}
		if acc.n == 0 || p.Value < acc.min {
			acc.min = p.Value
		}
		if acc.n == 0 || p.Value > acc.max {
			acc.max = p.Value
		}
		acc.n++
		acc.mean += (p.Value - acc.mean) / float64(acc.n)
	}
}

func (c *compactor) close(r *aggRun) {
	r.agg.Points = make(map[string]hearth.PointAggregate, len(r.points))
	for name, acc := range r.points {
		pa := hearth.PointAggregate{N: acc.n, Q: acc.q}
		if acc.n > 0 {
			pa.Min, pa.Max, pa.Avg = acc.min, acc.max, acc.mean
		}
		r.agg.Points[name] = pa
	}
	c.done = append(c.done, r.agg)
	delete(c.open, r.agg.Device)
}

// finish closes every open run and returns the aggregates in seq order.
func (c *compactor) finish() []hearth.Aggregate {
	for _, r := range c.open {
		c.close(r)
	}
	out := c.done
	c.done = nil
	sortAggregates(out)
	return out
}
