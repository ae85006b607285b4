package buffer

import (
	"testing"
	"time"
)

// TestHistoryOnePerDeviceMinute stores readings of three devices over
// several minutes and expects History to hand back the last of each device
// and minute from since on, nothing older, and the aggregates of the same
// span.
func TestHistoryOnePerDeviceMinute(t *testing.T) {
	s := newTestStore(t)
	// reading(i) is at t0+i s on device dev(i%3): 300 readings span five
	// minutes.
	stored := mustAppend(t, s, readings(0, 300))
	if _, err := s.db.Exec(`INSERT INTO aggregates (seq_from, seq_to, device, minute, n, clock, points)
		VALUES (1000001, 1000010, 'dev0', ?, 10, 'synced', '{"soc_pct":{"min":1,"avg":2,"max":3,"n":10}}'),
		       (1000011, 1000020, 'dev0', ?, 10, 'synced', '{"soc_pct":{"min":1,"avg":2,"max":3,"n":10}}')`,
		toMillis(t0.Add(-time.Hour)), toMillis(t0.Add(2*time.Minute))); err != nil {
		t.Fatal(err)
	}
	since := t0.Truncate(time.Minute).Add(2 * time.Minute)
	rs, as, err := s.History(since, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// Minutes 10:02 to 10:05: every device in the first three.
	want := map[[2]string]uint64{}
	for _, r := range stored {
		if r.Time.Before(since) {
			continue
		}
		k := [2]string{r.Device, r.Time.Truncate(time.Minute).String()}
		want[k] = max(want[k], r.Seq)
	}
	if len(rs) != len(want) || len(want) < 9 {
		t.Fatalf("got %d readings, want %d (one per device and minute)", len(rs), len(want))
	}
	for _, r := range rs {
		k := [2]string{r.Device, r.Time.Truncate(time.Minute).String()}
		if want[k] != r.Seq {
			t.Errorf("device %s minute %s: got seq %d, want the minute's last, %d", k[0], k[1], r.Seq, want[k])
		}
	}
	if len(as) != 1 || as[0].SeqFrom != 1000011 || as[0].Points["soc_pct"].Avg != 2 {
		t.Errorf("aggregates: got %+v, want only the one from since on", as)
	}
	// Capped, the newest are kept (the plots end now), oldest first.
	if capped, _, err := s.History(since, 4); err != nil || len(capped) != 4 {
		t.Errorf("limit 4: got %d readings (%v), want 4", len(capped), err)
	} else {
		for i, r := range capped {
			if want := rs[len(rs)-4+i].Seq; r.Seq != want {
				t.Errorf("limit 4: reading %d is seq %d, want %d (the newest four, oldest first)", i, r.Seq, want)
			}
		}
	}
	if _, _, err := s.History(since, 0); err == nil {
		t.Error("limit 0: want an error")
	}
}
