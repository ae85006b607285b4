// Package buffer is hearth's outbox: one SQLite database that holds
// readings and events until the uplink has delivered them.
//
// Delivery is at-least-once. A reading gets its Seq when it is appended and
// leaves the database only when the caller acks it, after the broker's
// PUBACK; the cloud de-duplicates by Seq. Seq is the readings table's rowid,
// assigned with AUTOINCREMENT, so it is strictly increasing across restarts
// and never reused, even after the newest rows were acked and deleted. A
// caller that delivers readings from memory and stores only some reserves
// seqs in blocks (ReserveSeqs, AppendWithSeq, ReleaseSeqs); a reservation
// left by a crash is reported as a not_stored gap at the next Open.
//
// The database runs in WAL mode with synchronous=NORMAL: a committed
// transaction survives the process being killed, but the last transactions
// before a power cut may be lost (never torn), which is the price of writing
// little to an SD card. A corrupt database is moved aside at Open and a
// fresh one started, with a buffer_corrupt event saying so.
//
// The store bounds its own size (Options.MaxBytes): past 80% of the quota,
// Append compacts the oldest readings into per-minute aggregates, and only
// then drops the oldest aggregates, then readings, then events, recording a
// gap event for every seq range it gives up. A full disk makes Append fail
// with ErrDiskFull; the readings refused are reported as a gap once the
// disk has room again. docs/buffer.md has the details and the figures.
package buffer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/hearth-energy/hearth"
)

// EventCorrupt is the type of the event recorded in a fresh database when
// the previous one was found corrupt and moved aside. Its data is
// {"path": …, "moved_to": …, "reason": …}.
const EventCorrupt = "buffer_corrupt"

// Options configures a Store. The zero value is usable.
type Options struct {
	// Logger receives the store's few log lines (a corrupt database moved
	// aside). Nil discards them.
	Logger *slog.Logger
	// MaxBytes is the byte quota of the database and its WAL
	// (buffer.max_bytes); 0 means no quota. See EnforceQuota.
	MaxBytes int64
	// CompactAge is how old (by reading time) a reading must be before the
	// quota may compact it into an aggregate. 0 means DefaultCompactAge.
	CompactAge time.Duration
	// Now is the clock used to stamp events, judge reading age for
	// compaction, rate commits and name moved-aside files. Nil means time.Now.
	Now func() time.Time
	// Marks, when set, keeps the high-water marks of seqs and event ids
	// in this State file (docs/buffer.md): a fresh database, the old one
	// corrupt or gone, starts above them. Nil keeps none.
	Marks *State
}

// DefaultCompactAge keeps the last hour at full resolution whatever the
// quota says, unless dropping is the only way left to stay under it.
const DefaultCompactAge = time.Hour

// Store is the SQLite outbox. Its methods are safe for concurrent use; they
// are serialised on one connection, since SQLite has one writer anyway.
type Store struct {
	db         *sql.DB
	path       string
	log        *slog.Logger
	maxBytes   int64
	compactAge time.Duration
	now        func() time.Time
	opened     time.Time
	pageSize   int64        // set by sizeWAL
	budget     int64        // bytes of live pages the quota allows: MaxBytes less the WAL's allowance
	commits    atomic.Int64 // write transactions committed since Open

	diskFull atomic.Bool // the last write failed with ErrDiskFull

	// marks are the high-water marks kept in the State file (nil: none);
	// markMu serialises their raising.
	marks  *marks
	markMu sync.Mutex

	// mu serialises Append, seq reservations and quota enforcement, and
	// guards lost and reserved.
	mu       sync.Mutex
	lost     lostReadings // readings refused for a full disk
	reserved uint64       // highest seq reserved by ReserveSeqs, as in meta
}

// Open opens or creates the database at path and brings its schema up to
// date. If the file is not a database or fails PRAGMA quick_check, it is
// moved aside (with its -wal and -shm files) to path+".corrupt-"+timestamp,
// a fresh database is created in its place, and a buffer_corrupt event is
// recorded in it. Other failures (permissions, a schema from a newer agent)
// are returned and leave the file alone. The caller owns the Store and must
// Close it.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open buffer: empty path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver splits the DSN at the first '?'.
		return nil, fmt.Errorf("open buffer %s: path must not contain '?'", path)
	}
	s := &Store{
		path:       path,
		log:        opts.Logger,
		maxBytes:   opts.MaxBytes,
		compactAge: opts.CompactAge,
		now:        opts.Now,
	}
	if s.compactAge <= 0 {
		s.compactAge = DefaultCompactAge
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}

	s.opened = s.now()
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("open buffer %s: negative MaxBytes %d", path, opts.MaxBytes)
	}

	if opts.Marks != nil {
		s.marks = &marks{st: opts.Marks}
		if err := s.marks.load(); err != nil {
			return nil, fmt.Errorf("open buffer %s: %w", path, err)
		}
	}
	_, statErr := os.Stat(path)
	existed := statErr == nil
	ctx := context.Background()
	db, err := openDB(ctx, path)
	if err != nil && (isNoSpace(err) || strings.Contains(err.Error(), "no space left")) && releaseReserve(path) {
		s.log.Warn("disk full at open: released the reserve file to open the buffer", "path", path)
		// Full until a write succeeds, which also brings the reserve back.
		s.diskFull.Store(true)
		db, err = openDB(ctx, path)
	}
	if err == nil {
		s.db = db
		keepReserve(path, s.reserveSize())
		if !existed {
			// Gone since the marks were kept: the cloud has its seqs.
			if err := s.startAbove(ctx); err != nil {
				_ = db.Close()
				return nil, fmt.Errorf("open buffer %s: %w", path, err)
			}
		}
		return s.ready(ctx)
	}
	if !isCorrupt(err) {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}

	movedTo, merr := moveAside(path, s.now())
	if merr != nil {
		return nil, fmt.Errorf("open buffer %s: corrupt (%v), and moving it aside failed: %w", path, err, merr)
	}
	s.log.Warn("buffer database corrupt, moved aside and started fresh",
		"path", path, "moved_to", movedTo, "err", err)

	db, err2 := openDB(ctx, path)
	if err2 != nil {
		return nil, fmt.Errorf("open fresh buffer %s after moving corrupt one aside: %w", path, err2)
	}
	s.db = db
	if err := s.startAbove(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open fresh buffer %s: %w", path, err)
	}
	data, jerr := json.Marshal(map[string]string{"path": path, "moved_to": movedTo, "reason": err.Error()})
	if jerr != nil {
		_ = db.Close()
		return nil, fmt.Errorf("encode %s event: %w", EventCorrupt, jerr)
	}
	if _, err := s.AppendEvent(hearth.Event{Type: EventCorrupt, Data: data}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("record %s event: %w", EventCorrupt, err)
	}
	return s.ready(ctx)
}

// ready sizes the WAL for the quota and brings an existing database under
// a quota that may have shrunk since it was written.
func (s *Store) ready(ctx context.Context) (*Store, error) {
	if err := s.sizeWAL(ctx); err != nil {
		_ = s.db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", s.path, err)
	}
	if err := s.recoverReserved(ctx); err != nil {
		_ = s.db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", s.path, err)
	}
	if err := s.EnforceQuota(); err != nil {
		// The store works; the quota is retried on every Append.
		s.log.Warn("buffer over quota at open", "err", err)
	}
	return s, nil
}

// Close closes the database. On a clean close SQLite checkpoints the WAL
// into the main file and removes it.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close buffer %s: %w", s.path, err)
	}
	return nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// reserveSize is the reserve file's size: 1 MiB, or a sixteenth of a
// smaller quota.
func (s *Store) reserveSize() int64 {
	if s.maxBytes > 0 {
		return min(reserveBytes, s.maxBytes/16)
	}
	return reserveBytes
}

func dsn(path string) string {
	// auto_vacuum is not in the DSN: the driver would set it on every
	// connection, and that writes to the file, even to a corrupt one we are
	// about to move aside. migrate sets it once, on a new file.
	return path + "?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL&_foreign_keys=1"
}

// openDB opens path, checks its integrity and migrates it. Errors for which
// isCorrupt is true mean the file should be moved aside.
func openDB(ctx context.Context, path string) (_ *sql.DB, err error) {
	db, err := sql.Open("sqlite3", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	defer func() {
		if err != nil {
			_ = db.Close()
		}
	}()
	// One writer: a single connection serialises everything and avoids
	// SQLITE_BUSY between our own connections. Keep it open, since each new
	// connection re-reads the schema and the WAL index.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	if err := db.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := quickCheck(ctx, db); err != nil {
		return nil, err
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, fmt.Errorf("read journal mode: %w", err)
	}
	if mode != "wal" {
		return nil, fmt.Errorf("journal mode is %q, want wal", mode)
	}
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	return db, nil
}

// corruptError is a failed integrity check.
type corruptError struct{ detail string }

func (e *corruptError) Error() string { return "integrity check failed: " + e.detail }

// quickCheck runs PRAGMA quick_check, which checks the b-tree structure in
// time linear in the file size (but not index contents, which we do not rely
// on).
func quickCheck(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check(20)")
	if err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if len(msgs) == 1 && msgs[0] == "ok" {
		return nil
	}
	return &corruptError{detail: strings.Join(msgs, "; ")}
}

// isCorrupt reports whether err means the file is damaged or not a
// database, as opposed to an I/O, permission or version problem that moving
// the file aside would not fix.
func isCorrupt(err error) bool {
	var ce *corruptError
	if errors.As(err, &ce) {
		return true
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrCorrupt || se.Code == sqlite3.ErrNotADB
	}
	return false
}

// moveAside renames path and its -wal, -shm and -journal files to
// path+".corrupt-"+timestamp (plus the same suffixes) and returns the new
// main path. The side files go first: a stale -wal left beside a fresh
// database would be replayed into it.
func moveAside(path string, now time.Time) (string, error) {
	to := path + ".corrupt-" + now.UTC().Format("20060102T150405.000000000Z")
	for _, ext := range []string{"-wal", "-shm", "-journal"} {
		err := os.Rename(path+ext, to+ext)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("move %s aside: %w", path+ext, err)
		}
	}
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("move %s aside: %w", path, err)
	}
	return to, nil
}

// Stats describes the outbox at one instant, for `hearth buffer` and the
// status topic.
type Stats struct {
	PendingReadings   int64     `json:"pending_readings"`   // readings not yet acked
	PendingAggregates int64     `json:"pending_aggregates"` // aggregates not yet acked
	PendingEvents     int64     `json:"pending_events"`     // events not yet acked
	OldestPending     time.Time `json:"oldest_pending"`     // Time of the lowest-seq pending reading; zero if none
	FileBytes         int64     `json:"file_bytes"`         // page_count*page_size of the database plus the WAL file's size
	MaxBytes          int64     `json:"max_bytes"`          // the configured quota, 0 for none
	LastSeq           uint64    `json:"last_seq"`           // highest seq ever assigned or reserved, acked or not; 0 if none yet

	// What the quota cost, since the database was created.
	Compactions       int64 `json:"compactions"`        // compaction passes
	ReadingsCompacted int64 `json:"readings_compacted"` // readings replaced by aggregates
	AggregatesDropped int64 `json:"aggregates_dropped"` // aggregates deleted undelivered
	ReadingsDropped   int64 `json:"readings_dropped"`   // readings deleted undelivered, not aggregated
	EventsDropped     int64 `json:"events_dropped"`     // events deleted undelivered, the last resort

	// A full disk: DiskFull is set while the last write failed for lack of
	// space; ReadingsRefused counts readings Append refused since Open.
	DiskFull        bool  `json:"disk_full"`
	ReadingsRefused int64 `json:"readings_refused"`

	// Wear. WriteBytes is what this process caused to be written to
	// storage, from /proc/self/io (0 where that is unavailable); Commits
	// counts write transactions since Open, and CommitsPerHour rates them
	// over the time since Open.
	WriteBytes     int64   `json:"write_bytes"`
	Commits        int64   `json:"commits"`
	CommitsPerHour float64 `json:"commits_per_hour"`
}

// Stats returns the outbox's depth and size, read in one transaction. The
// counts scan the tables, so this is linear in the number of pending rows.
func (s *Store) Stats() (Stats, error) {
	ctx := context.Background()
	st := Stats{MaxBytes: s.maxBytes}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("stats: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM readings").Scan(&st.PendingReadings); err != nil {
		return st, fmt.Errorf("stats: count readings: %w", err)
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&st.PendingEvents); err != nil {
		return st, fmt.Errorf("stats: count events: %w", err)
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM aggregates").Scan(&st.PendingAggregates); err != nil {
		return st, fmt.Errorf("stats: count aggregates: %w", err)
	}
	counters, err := readCounters(ctx, tx)
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	st.Compactions = counters[counterCompactions]
	st.ReadingsCompacted = counters[counterReadingsCompacted]
	st.AggregatesDropped = counters[counterAggregatesDropped]
	st.ReadingsDropped = counters[counterReadingsDropped]
	st.EventsDropped = counters[counterEventsDropped]
	// A reading in the oldest pending aggregate is older than any pending
	// reading: compaction takes the oldest first.
	var aggMinute int64
	switch err := tx.QueryRowContext(ctx, "SELECT minute FROM aggregates ORDER BY seq_from LIMIT 1").Scan(&aggMinute); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("stats: oldest aggregate: %w", err)
	default:
		st.OldestPending = fromMillis(aggMinute)
	}
	var ts int64
	switch err := tx.QueryRowContext(ctx, "SELECT ts FROM readings ORDER BY seq LIMIT 1").Scan(&ts); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("stats: oldest reading: %w", err)
	case st.OldestPending.IsZero():
		st.OldestPending = fromMillis(ts)
	}
	var last int64
	switch err := tx.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = 'readings'").Scan(&last); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("stats: last seq: %w", err)
	default:
		st.LastSeq = uint64(last)
	}
	if st.FileBytes, err = s.usedBytes(ctx, tx); err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	_ = tx.Rollback() // read only; release the connection before taking mu

	s.mu.Lock()
	st.ReadingsRefused = s.lost.refused
	st.LastSeq = max(st.LastSeq, s.reserved)
	s.mu.Unlock()
	st.DiskFull = s.diskFull.Load()
	st.WriteBytes = processWriteBytes()
	st.Commits = s.commits.Load()
	if h := s.now().Sub(s.opened).Hours(); h > 0 {
		st.CommitsPerHour = float64(st.Commits) / h
	}
	return st, nil
}

// querier is what usedBytes needs from a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// usedBytes is the database's logical size (page_count*page_size, which
// drops as soon as incremental_vacuum frees pages, before a checkpoint
// shrinks the file) plus the WAL file's size: what the quota bounds.
func (s *Store) usedBytes(ctx context.Context, q querier) (int64, error) {
	var pages, pageSize int64
	if err := q.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return 0, fmt.Errorf("page count: %w", err)
	}
	if err := q.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return 0, fmt.Errorf("page size: %w", err)
	}
	n := pages * pageSize
	switch fi, err := os.Stat(s.path + "-wal"); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return 0, err
	default:
		n += fi.Size()
	}
	return n, nil
}

// Meta returns the value stored under key, and whether there is one.
func (s *Store) Meta(key string) (value string, ok bool, err error) {
	err = s.db.QueryRow("SELECT value FROM meta WHERE key = ?", key).Scan(&value)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("read meta %q: %w", key, err)
	}
	return value, true, nil
}

// SetMeta stores value under key, replacing any previous value.
func (s *Store) SetMeta(key, value string) error {
	_, err := s.db.Exec(`INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("write meta %q: %w", key, err)
	}
	return nil
}

// foreignMeta returns every meta key the store does not keep for itself:
// what its users (the control loop's lease state) stored there.
func (s *Store) foreignMeta() (map[string]string, error) {
	rows, err := s.db.Query("SELECT key, value FROM meta WHERE key <> ?", metaSeqReserved)
	if err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("read meta: %w", err)
		}
		m[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	return m, nil
}

func toMillis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
