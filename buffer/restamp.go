package buffer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-energy/hearth"
)

// Restamp recomputes the time of every pending reading of boot that was
// taken with the clock unsynced, now that the wall clock is synced: at is
// a synced wall-clock time and atMonoMS the monotonic milliseconds (the
// MonoMS scale of that boot) at the same instant, so a reading's time
// becomes at - (atMonoMS - MonoMS). Such readings get clock "restamped"
// (hearth.ClockRestamped). Seqs do not change: seq order is append order,
// whatever the wall clock did. Readings of other boots cannot be restamped
// (their monotonic clock is gone) and keep clock "unsynced", as do
// aggregates, whose minutes came from the unsynced times.
//
// It returns how many readings it restamped. It is cheap when there is
// nothing to do (an index holds only unsynced readings), so the caller may
// call it after every commit while the clock is synced.
func (s *Store) Restamp(boot string, at time.Time, atMonoMS int64) (int64, error) {
	if boot == "" {
		return 0, errors.New("restamp: empty boot id")
	}
	var n int64
	err := s.inTx(func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE readings SET ts = ? - (? - mono_ms), clock = ?
			WHERE clock = 'unsynced' AND boot = ?`,
			toMillis(at), atMonoMS, string(hearth.ClockRestamped), boot)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("restamp boot %s: %w", boot, err)
	}
	return n, nil
}
