package buffer

import (
	"fmt"
	"time"

	"github.com/hearth-energy/hearth"
)

// History returns what the buffer still holds from since on, for plots of
// the recent past: at most one reading per device and minute (the last
// stored in that minute) and the aggregates of compacted minutes, each
// oldest first and at most limit long: when there are more, the newest
// limit, since a plot of the recent past ends now. Delivered readings have
// left the buffer, so after an outage this is the outage's data; limit
// must be positive.
func (s *Store) History(since time.Time, limit int) ([]hearth.Reading, []hearth.Aggregate, error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("history: limit %d is not positive", limit)
	}
	ms := toMillis(since)
	rs, err := s.queryReadings(`SELECT * FROM (SELECT `+readingCols+` FROM readings WHERE seq IN (
		SELECT max(seq) FROM readings WHERE ts >= ? GROUP BY device, ts / 60000)
		ORDER BY seq DESC LIMIT ?) ORDER BY seq`, ms, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("history readings: %w", err)
	}
	as, err := s.queryAggregates(`SELECT * FROM (SELECT seq_from, seq_to, device, minute, n, clock, points
		FROM aggregates WHERE minute >= ? ORDER BY seq_from DESC LIMIT ?) ORDER BY seq_from`, ms, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("history aggregates: %w", err)
	}
	return rs, as, nil
}
