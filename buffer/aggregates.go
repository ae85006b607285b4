package buffer

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/hearth-energy/hearth"
)

// PendingAggregates returns up to limit unacked aggregates, oldest (lowest
// SeqFrom) first. Every pending aggregate is older than every pending
// reading, so backfill sends these first. limit must be positive.
func (s *Store) PendingAggregates(limit int) ([]hearth.Aggregate, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending aggregates: limit %d is not positive", limit)
	}
	out, err := s.queryAggregates(`SELECT seq_from, seq_to, device, minute, n, clock, points
		FROM aggregates ORDER BY seq_from LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("pending aggregates: %w", err)
	}
	return out, nil
}

func (s *Store) queryAggregates(query string, args ...any) ([]hearth.Aggregate, error) {
	rows, err := s.db.Query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []hearth.Aggregate
	for rows.Next() {
		var (
			a                hearth.Aggregate
			from, to, minute int64
			clock            string
			points           []byte
		)
		if err := rows.Scan(&from, &to, &a.Device, &minute, &a.N, &clock, &points); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(points, &a.Points); err != nil {
			return nil, fmt.Errorf("decode points of seq %d: %w", from, err)
		}
		a.SeqFrom, a.SeqTo = uint64(from), uint64(to)
		a.Time = fromMillis(minute)
		a.Clock = hearth.ClockState(clock)
		out = append(out, a)
	}
	return out, rows.Err()
}

// AckAggregates deletes the aggregates with the given SeqFroms, in one
// transaction, once the broker has acknowledged them. Unknown ones are
// ignored.
func (s *Store) AckAggregates(seqFroms []uint64) error {
	if err := s.deleteIDs("DELETE FROM aggregates WHERE seq_from = ?", seqFroms); err != nil {
		return fmt.Errorf("ack %d aggregates: %w", len(seqFroms), err)
	}
	return nil
}

func sortAggregates(as []hearth.Aggregate) {
	sort.Slice(as, func(i, j int) bool { return as[i].SeqFrom < as[j].SeqFrom })
}
