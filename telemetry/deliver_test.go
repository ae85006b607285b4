package telemetry

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// memOutbox is an empty buffer: every reading is in memory.
type memOutbox struct{}

func (memOutbox) Newest(int) ([]hearth.Reading, error)              { return nil, nil }
func (memOutbox) Pending(int) ([]hearth.Reading, error)             { return nil, nil }
func (memOutbox) Ack([]uint64) error                                { return nil }
func (memOutbox) PendingEvents(int) ([]hearth.Event, error)         { return nil, nil }
func (memOutbox) AckEvents([]uint64) error                          { return nil }
func (memOutbox) PendingAggregates(int) ([]hearth.Aggregate, error) { return nil, nil }
func (memOutbox) AckAggregates([]uint64) error                      { return nil }

// batchUplink records each telemetry batch and acknowledges it whole.
type batchUplink struct {
	mu       sync.Mutex
	batches  [][]uint64
	backfill []bool
}

func (u *batchUplink) Connected() bool { return true }
func (u *batchUplink) PublishTelemetry(_ context.Context, rs []hearth.Reading, backfill bool) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var seqs []uint64
	for _, r := range rs {
		seqs = append(seqs, r.Seq)
	}
	u.batches = append(u.batches, seqs)
	u.backfill = append(u.backfill, backfill)
	return len(rs), nil
}
func (u *batchUplink) PublishEvent(context.Context, hearth.Event) error            { return nil }
func (u *batchUplink) PublishAggregates(context.Context, []hearth.Aggregate) error { return nil }

// TestWindowGathersLiveReadings: with a 5 s window, readings arriving
// each second go out together once the oldest has waited 5 s, none before
// and none left behind; without a window each round's go at once.
func TestWindowGathersLiveReadings(t *testing.T) {
	for _, tc := range []struct {
		window time.Duration
		want   [][]uint64
	}{
		{5 * time.Second, [][]uint64{{1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}}},
		{0, [][]uint64{{1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}}},
	} {
		var mono time.Duration
		clock := Clock{Boot: "b", Since: func() time.Duration { return mono }, Now: time.Now, Synced: func() bool { return true }}
		fresh := &Fresh{}
		up := &batchUplink{}
		d := NewDeliverer(DelivererOptions{Outbox: memOutbox{}, Uplink: up, Fresh: fresh, Clock: clock, Window: tc.window})
		for seq := uint64(1); seq <= 12; seq++ {
			fresh.add([]hearth.Reading{{Seq: seq, Device: "battery", Boot: "b", MonoMS: mono.Milliseconds(),
				Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}}}, mono)
			if _, err := d.DeliverOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			mono += time.Second
		}
		if len(up.batches) != len(tc.want) {
			t.Fatalf("window %v: batches %v, want %v", tc.window, up.batches, tc.want)
		}
		for i := range tc.want {
			if len(up.batches[i]) != len(tc.want[i]) || up.batches[i][0] != tc.want[i][0] {
				t.Errorf("window %v: batches %v, want %v", tc.window, up.batches, tc.want)
				break
			}
		}
		if fresh.Len() != 0 {
			t.Errorf("window %v: %d readings left in memory", tc.window, fresh.Len())
		}
	}
}

// storedOutbox holds readings stored while the uplink was down.
type storedOutbox struct {
	memOutbox
	rs []hearth.Reading
}

func (o storedOutbox) Newest(int) ([]hearth.Reading, error)  { return o.rs, nil }
func (o storedOutbox) Pending(int) ([]hearth.Reading, error) { return o.rs, nil }

// TestWindowLeavesTheOutageOnBackfill: readings stored during an outage,
// a few seconds old, are backlog (…/telemetry/backfill), whatever the
// window, which only readings in memory wait out.
func TestWindowLeavesTheOutageOnBackfill(t *testing.T) {
	mono := 10 * time.Second
	clock := Clock{Boot: "b", Since: func() time.Duration { return mono }, Now: time.Now, Synced: func() bool { return true }}
	stored := []hearth.Reading{{Seq: 1, Device: "battery", Boot: "b", MonoMS: (mono - 3*time.Second).Milliseconds(),
		Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}}}
	up := &batchUplink{}
	d := NewDeliverer(DelivererOptions{Outbox: storedOutbox{rs: stored}, Uplink: up, Fresh: &Fresh{}, Clock: clock, Window: 5 * time.Second})
	if _, err := d.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(up.batches) != 1 || !up.backfill[0] {
		t.Errorf("batches %v, backfill %v; want the stored reading on backfill", up.batches, up.backfill)
	}
}

// TestWindowKeepsTheOutageOffLive: a reading still in memory that was
// taken before the uplink came back is not sent live, however short the
// outage: it goes on backfill, from memory (the disk is spared); one taken
// since is held for the window, then live.
func TestWindowKeepsTheOutageOffLive(t *testing.T) {
	mono := 10 * time.Second
	clock := Clock{Boot: "b", Since: func() time.Duration { return mono }, Now: time.Now, Synced: func() bool { return true }}
	fresh := &Fresh{}
	up := &batchUplink{}
	d := NewDeliverer(DelivererOptions{Outbox: memOutbox{}, Uplink: up, Fresh: fresh, Clock: clock, Window: 5 * time.Second})
	add := func(seq uint64) {
		fresh.add([]hearth.Reading{{Seq: seq, Device: "battery", Boot: "b", MonoMS: mono.Milliseconds(),
			Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}}}, mono)
	}
	add(1) // taken during the outage
	mono += 2 * time.Second
	d.upSince.Store(int64(mono)) // the uplink is back
	add(2)
	mono += 5 * time.Second
	if _, err := d.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(up.batches) != 2 || len(up.batches[0]) != 1 || up.batches[0][0] != 1 || !up.backfill[0] ||
		len(up.batches[1]) != 1 || up.batches[1][0] != 2 || up.backfill[1] {
		t.Errorf("batches %v (backfill %v); want seq 1 on backfill, then seq 2 live", up.batches, up.backfill)
	}
	if fresh.Len() != 0 {
		t.Errorf("%d readings left in memory", fresh.Len())
	}
}

// linkUplink is a link the deliverer finds connected at every poll: the
// outage it had fell between two polls.
type linkUplink struct{ batchUplink }

// TestLinkLostBetweenPollsIsAReconnection: the link drops and comes back
// between two of the deliverer's polls, which find it connected each
// time. The uplink reports both changes, and the deliverer treats the
// return as a reconnection: the reading in memory taken during the outage
// goes on backfill, the one taken since is live.
func TestLinkLostBetweenPollsIsAReconnection(t *testing.T) {
	var mono atomic.Int64
	mono.Store(int64(10 * time.Second))
	clock := Clock{Boot: "b", Since: func() time.Duration { return time.Duration(mono.Load()) }, Now: time.Now, Synced: func() bool { return true }}
	fresh := &Fresh{}
	up := &linkUplink{}
	d := NewDeliverer(DelivererOptions{Outbox: memOutbox{}, Uplink: up, Fresh: fresh, Clock: clock, Window: 5 * time.Second})
	add := func(seq uint64) {
		at := time.Duration(mono.Load())
		fresh.add([]hearth.Reading{{Seq: seq, Device: "battery", Boot: "b", MonoMS: at.Milliseconds(),
			Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}}}, at)
	}
	d.LinkChanged(true) // the first connection, at boot
	d.Start()
	d.LinkChanged(false) // lost...
	add(1)               // ...while this reading was taken...
	mono.Add(int64(2 * time.Second))
	d.LinkChanged(true) // ...and made again
	add(2)
	mono.Add(int64(5 * time.Second)) // seq 2 has waited out the window
	d.Close(time.Now().Add(time.Minute))
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.batches) != 2 || len(up.batches[0]) != 1 || up.batches[0][0] != 1 || !up.backfill[0] ||
		len(up.batches[1]) != 1 || up.batches[1][0] != 2 || up.backfill[1] {
		t.Errorf("batches %v (backfill %v); want seq 1, taken during the outage, on backfill, then seq 2 live", up.batches, up.backfill)
	}
}
