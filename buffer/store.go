// Package buffer is hearth's outbox: one SQLite database that holds
// readings and events until the uplink has delivered them.
//
// Delivery is at-least-once. A reading gets its Seq when it is appended and
// leaves the database only when the caller acks it, after the broker's
// PUBACK; the cloud de-duplicates by Seq. Seq is the readings table's rowid,
// assigned with AUTOINCREMENT, so it is strictly increasing across restarts
// and never reused, even after the newest rows were acked and deleted.
//
// The database runs in WAL mode with synchronous=NORMAL: a committed
// transaction survives the process being killed, but the last transactions
// before a power cut may be lost (never torn), which is the price of writing
// little to an SD card. A corrupt database is moved aside at Open and a
// fresh one started, with a buffer_corrupt event saying so.
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
	"time"

	"github.com/mattn/go-sqlite3"
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
	// MaxBytes is the byte quota of the database file (buffer.max_bytes);
	// 0 means no quota. It is reported by Stats; enforcing it by compaction
	// and eviction is not implemented yet.
	MaxBytes int64
	// Now is the clock used to stamp events and name moved-aside files.
	// Nil means time.Now.
	Now func() time.Time
}

// Store is the SQLite outbox. Its methods are safe for concurrent use; they
// are serialised on one connection, since SQLite has one writer anyway.
type Store struct {
	db       *sql.DB
	path     string
	log      *slog.Logger
	maxBytes int64
	now      func() time.Time
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
		path:     path,
		log:      opts.Logger,
		maxBytes: opts.MaxBytes,
		now:      opts.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}

	ctx := context.Background()
	db, err := openDB(ctx, path)
	if err == nil {
		s.db = db
		return s, nil
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
	data, jerr := json.Marshal(map[string]string{"path": path, "moved_to": movedTo, "reason": err.Error()})
	if jerr != nil {
		_ = db.Close()
		return nil, fmt.Errorf("encode %s event: %w", EventCorrupt, jerr)
	}
	if _, err := s.AppendEvent(Event{Type: EventCorrupt, Data: data}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("record %s event: %w", EventCorrupt, err)
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

// Stats describes the outbox at one instant.
type Stats struct {
	PendingReadings int64     // readings not yet acked
	PendingEvents   int64     // events not yet acked
	OldestPending   time.Time // Time of the lowest-seq pending reading; zero if none
	FileBytes       int64     // page_count*page_size of the database plus the WAL file's size
	MaxBytes        int64     // the configured quota, 0 for none
	LastSeq         uint64    // highest seq ever assigned, acked or not; 0 if none yet
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
	var ts int64
	switch err := tx.QueryRowContext(ctx, "SELECT ts FROM readings ORDER BY seq LIMIT 1").Scan(&ts); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("stats: oldest reading: %w", err)
	default:
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
	var pages, pageSize int64
	if err := tx.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return st, fmt.Errorf("stats: page count: %w", err)
	}
	if err := tx.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return st, fmt.Errorf("stats: page size: %w", err)
	}
	st.FileBytes = pages * pageSize
	switch fi, err := os.Stat(s.path + "-wal"); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return st, fmt.Errorf("stats: %w", err)
	default:
		st.FileBytes += fi.Size()
	}
	return st, nil
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

func toMillis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
