package telemetry

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
)

// countingStore counts the commits of readings into a real buffer.
type countingStore struct {
	*buffer.Store
	appends atomic.Int64
}

func (c *countingStore) AppendWithSeq(rs []hearth.Reading) ([]hearth.Reading, error) {
	c.appends.Add(1)
	return c.Store.AppendWithSeq(rs)
}

// TestCommitIntervalBatchesOutage: with the uplink down, a writer with a
// commit interval stores the readings of many poll cycles in one commit
// each time the oldest has waited the interval, and everything at Close;
// with 0 it commits every cycle. The agent's monotonic clock is the
// test's, stepped 100 ms per poll cycle; the buffer is a real one.
func TestCommitIntervalBatchesOutage(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		commits  int64 // appends for 30 cycles, Close included
	}{{0, 30}, {time.Second, 3}} {
		t.Run(tc.interval.String(), func(t *testing.T) {
			st, err := buffer.Open(filepath.Join(t.TempDir(), "hearth.db"), buffer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var mono atomic.Int64
			clock := Clock{Boot: "b00t", Since: func() time.Duration { return time.Duration(mono.Load()) },
				Now: time.Now, Synced: func() bool { return true }}
			cs := &countingStore{Store: st}
			fresh := &Fresh{}
			w := NewWriter(WriterOptions{Store: cs, Fresh: fresh, Clock: clock, CycleSize: 1,
				Online: func() bool { return false }, Wake: func() {}, Record: func(string, map[string]any) {},
				CommitInterval: tc.interval})
			w.Start()
			for i := range 30 {
				mono.Add(int64(100 * time.Millisecond))
				r := hearth.Reading{Device: "battery", Time: time.Now(), Clock: hearth.ClockSynced, Boot: "b00t",
					Points: map[string]hearth.Point{"soc_pct": hearth.V(float64(i))}}
				if err := w.Submit(context.Background(), r); err != nil {
					t.Fatal(err)
				}
				// One cycle at a time: the writer takes this reading at
				// this moment of the clock.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
					st, err := cs.Stats()
					if err != nil {
						t.Fatal(err)
					}
					if int(st.PendingReadings)+fresh.Len() == i+1 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the writer did not take reading %d", i)
					}
				}
			}
			w.Close()
			after, err := st.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if after.PendingReadings != 30 {
				t.Errorf("%d readings stored, want all 30", after.PendingReadings)
			}
			if got := cs.appends.Load(); got != tc.commits {
				t.Errorf("commit_interval %s: %d commits of readings for 30 poll cycles offline, want %d", tc.interval, got, tc.commits)
			}
		})
	}
}
