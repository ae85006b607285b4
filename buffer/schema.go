package buffer

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; migrations[i] takes the schema from
// version i to version i+1, which is recorded in PRAGMA user_version in the
// same transaction. Append new migrations; never edit a released one.
var migrations = []string{
	// 1: the outbox.
	//
	// readings.seq is AUTOINCREMENT so that SQLite never hands out a seq
	// again, even after the newest rows have been acked and deleted: the
	// cloud de-duplicates by seq, so a reused seq would be a lost reading.
	// The highest seq ever assigned is kept in sqlite_sequence.
	`
CREATE TABLE readings (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	device  TEXT    NOT NULL,
	ts      INTEGER NOT NULL, -- unix milliseconds, UTC
	clock   TEXT    NOT NULL,
	boot    TEXT    NOT NULL,
	mono_ms INTEGER NOT NULL,
	payload TEXT    NOT NULL  -- points as JSON: {"name":{"v":1.5},"other":{"q":"comm_error"}}
);
CREATE TABLE events (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	ts      INTEGER NOT NULL, -- unix milliseconds, UTC
	type    TEXT    NOT NULL,
	payload TEXT              -- JSON, or NULL for an event without data
);
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`,
	// 2: quota. Aggregates replace compacted readings, one row per run of
	// one device's readings within one minute and one clock state; seq_from
	// is a reading's seq, so it is unique and serves as the rowid. counters
	// keeps what the quota cost across restarts. The partial index finds
	// the readings Restamp rewrites without costing synced appends anything.
	`
CREATE TABLE aggregates (
	seq_from INTEGER PRIMARY KEY, -- lowest seq replaced
	seq_to   INTEGER NOT NULL,    -- highest seq replaced
	device   TEXT    NOT NULL,
	minute   INTEGER NOT NULL,    -- start of the minute, unix milliseconds, UTC
	n        INTEGER NOT NULL,    -- readings replaced
	clock    TEXT    NOT NULL,
	points   TEXT    NOT NULL     -- {"name":{"min":…,"avg":…,"max":…,"n":…,"q":{"comm_error":…}}}
);
CREATE TABLE counters (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX readings_unsynced ON readings (boot) WHERE clock = 'unsynced';
`,
}

// schemaVersion is the schema version this package writes.
var schemaVersion = len(migrations)

// migrate brings the database to schemaVersion, one transaction per
// migration. A database from a newer agent is refused rather than guessed at.
func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this agent's %d", v, schemaVersion)
	}
	if v == 0 {
		if err := ensureIncrementalVacuum(ctx, db); err != nil {
			return err
		}
	}
	for ; v < schemaVersion; v++ {
		if err := applyMigration(ctx, db, v+1, migrations[v]); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, to int, stmts string) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration %d: %w", to, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, stmts); err != nil {
		return fmt.Errorf("apply migration %d: %w", to, err)
	}
	// PRAGMA does not take bind parameters; to is an int we control.
	if _, err = tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", to)); err != nil {
		return fmt.Errorf("set schema version %d: %w", to, err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit migration %d: %w", to, err)
	}
	return nil
}

// ensureIncrementalVacuum turns on incremental auto-vacuum, which can only
// be chosen before the first table exists, so that later compaction can
// hand freed pages back to the file system with PRAGMA incremental_vacuum.
// Opening in WAL mode has already written the header of a new file, which
// fixes the setting, so it takes a VACUUM of the still empty file.
func ensureIncrementalVacuum(ctx context.Context, db *sql.DB) error {
	var tables int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return fmt.Errorf("count tables: %w", err)
	}
	if tables > 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return fmt.Errorf("set auto_vacuum: %w", err)
	}
	var mode int
	if err := db.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return fmt.Errorf("read auto_vacuum: %w", err)
	}
	if mode == 2 {
		return nil
	}
	if _, err := db.ExecContext(ctx, "VACUUM"); err != nil {
		return fmt.Errorf("vacuum to set auto_vacuum: %w", err)
	}
	return nil
}
