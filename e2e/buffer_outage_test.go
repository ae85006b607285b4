package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/telemetry"
	"github.com/hearth-energy/hearth/uplink"
)

// outageFeed makes the readings of four devices polled at 1 Hz, in
// simulated time, and remembers every one the buffer stored.
type outageFeed struct {
	t      *testing.T
	store  *buffer.Store
	start  time.Time
	tick   int
	stored map[uint64]hearth.Reading
}

// cycle appends one poll cycle: one reading per device, one commit.
func (f *outageFeed) cycle() []hearth.Reading {
	f.t.Helper()
	rs := make([]hearth.Reading, 4)
	for d := range rs {
		rs[d] = hearth.Reading{
			Device: fmt.Sprintf("dev%d", d),
			Time:   f.start.Add(time.Duration(f.tick) * time.Second),
			Clock:  hearth.ClockSynced,
			Boot:   "b00t",
			MonoMS: int64(f.tick) * 1000,
			Points: map[string]hearth.Point{
				"soc_pct": hearth.V(50 + float64(f.tick%500)/10),
				"power_w": hearth.V(float64(d*1000 - f.tick)),
				"temp_c":  hearth.Q(hearth.QualityCommError),
			},
		}
	}
	f.tick++
	got, err := f.store.Append(rs)
	if err != nil {
		f.t.Fatalf("append: %v", err)
	}
	for _, r := range got {
		f.stored[r.Seq] = r
	}
	return got
}

// deliverer is the agent's delivery (telemetry.Deliverer) over the feed's
// buffer and a real session, on the feed's simulated monotonic clock: a
// reading is live while it is at most two simulated seconds old.
func (f *outageFeed) deliverer(up *uplink.Session) *telemetry.Deliverer {
	return telemetry.NewDeliverer(telemetry.DelivererOptions{
		Outbox: f.store, Uplink: up,
		Clock: telemetry.Clock{Boot: "b00t", Since: func() time.Duration { return time.Duration(f.tick-1) * time.Second }},
	})
}

// TestBufferOutageBackfill runs the buffer and the uplink against a real
// Mosquitto through a 10-minute (simulated) broker outage with four
// devices at 1 Hz: the broker is killed and restarted, and afterwards
// every reading has arrived exactly once after de-duplication by seq,
// unchanged, with the backlog in seq order on telemetry/backfill.
func TestBufferOutageBackfill(t *testing.T) {
	t.Parallel()
	const gw = "gw-buf-outage"
	mq := startBroker(t)
	px := harness.StartProxy(t, mq.Addr())
	store, err := buffer.Open(filepath.Join(t.TempDir(), "hearth.db"), buffer.Options{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	up, err := uplink.New(uplink.Config{
		Broker: px.URL(), GatewayID: gw,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond,
		PublishTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up.Start(ctx)
	t.Cleanup(func() {
		closeCtx, stop := context.WithTimeout(context.Background(), 3*time.Second)
		defer stop()
		_ = up.Close(closeCtx)
		cancel()
	})
	rec := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	waitConnected(t, up)

	feed := &outageFeed{t: t, store: store, start: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), stored: map[uint64]hearth.Reading{}}
	d := feed.deliverer(up)
	// A minute of normal operation: everything goes live.
	for range 60 {
		feed.cycle()
		drainAll(t, store, d)
	}
	for _, m := range rec.WaitFor(t, 30*time.Second, func(m []harness.Message) bool { return len(distinct(t, m, gw)) >= 240 }) {
		if strings.HasSuffix(m.Topic, "/backfill") {
			t.Errorf("a reading went on %s before the outage", m.Topic)
		}
	}

	// The outage: the gateway loses the broker, which is killed.
	px.Refuse(true)
	px.Cut()
	mq.Stop()
	for range 600 {
		feed.cycle()
		if _, err := d.DeliverOnce(ctx); err == nil {
			t.Fatal("delivery succeeded with the broker down")
		}
	}
	st, err := store.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingReadings != 2400 {
		t.Fatalf("%d readings pending after the outage, want 2400", st.PendingReadings)
	}

	// The broker is back; a minute of live readings while the backlog drains.
	mq.Start()
	rec2 := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	px.Refuse(false)
	waitConnected(t, up)
	for range 60 {
		feed.cycle()
		if _, err := d.DeliverOnce(ctx); err != nil {
			t.Logf("deliver: %v", err) // retried below
		}
	}
	drainAll(t, store, d)

	want := len(feed.stored)
	msgs := append(rec.Messages(), rec2.WaitFor(t, 30*time.Second, func(m []harness.Message) bool {
		return len(distinct(t, append(rec.Messages(), m...), gw)) >= want
	})...)
	got := distinct(t, msgs, gw)
	for seq, r := range feed.stored {
		g, ok := got[seq]
		if !ok {
			t.Errorf("seq %d never arrived", seq)
			continue
		}
		if !reflect.DeepEqual(g, r) {
			t.Errorf("seq %d arrived as %+v, want %+v", seq, g, r)
		}
	}
	if len(got) != want {
		t.Errorf("%d distinct seqs arrived, want %d", len(got), want)
	}
	// The backlog arrived on backfill, oldest first.
	var prev uint64
	backfilled := 0
	seen := map[uint64]bool{}
	for _, m := range msgs {
		if !strings.HasSuffix(m.Topic, "/telemetry/backfill") {
			continue
		}
		for _, r := range batchOf(t, m) {
			if seen[r.Seq] {
				continue // a redelivery, de-duplicated by seq
			}
			seen[r.Seq] = true
			if r.Seq <= prev {
				t.Errorf("backfill seq %d after %d", r.Seq, prev)
			}
			prev = r.Seq
			backfilled++
		}
	}
	// The outage's last two seconds were still fresh when the broker came
	// back, and went live; every older reading is backlog.
	if backfilled < 2400-2*4 {
		t.Errorf("%d readings arrived on backfill, want at least the outage's 2400 but its last two cycles", backfilled)
	}
	if st, err := store.Stats(); err != nil || st.PendingReadings != 0 {
		t.Errorf("after the drain: %d readings pending (%v), want 0", st.PendingReadings, err)
	}
}

func waitConnected(t *testing.T, up *uplink.Session) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !up.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("uplink did not connect within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drainAll delivers until nothing is pending, retrying transient failures.
func drainAll(t *testing.T, s *buffer.Store, d *telemetry.Deliverer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingReadings == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d readings still pending after 30s of delivery", st.PendingReadings)
		}
		if _, err := d.DeliverOnce(context.Background()); err != nil {
			if !errors.Is(err, uplink.ErrNotConnected) {
				t.Logf("deliver: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func batchOf(t *testing.T, m harness.Message) []hearth.Reading {
	t.Helper()
	b, err := uplink.DecodeTelemetry(m.Payload)
	if err != nil {
		t.Fatalf("telemetry on %s: %v", m.Topic, err)
	}
	return b.Readings
}

// distinct returns the readings received on the gateway's telemetry
// topics, de-duplicated by seq; it fails the test if two copies of one seq
// differ.
func distinct(t *testing.T, msgs []harness.Message, gw string) map[uint64]hearth.Reading {
	t.Helper()
	out := map[uint64]hearth.Reading{}
	for _, r := range readings(t, msgs, gw) {
		if prev, ok := out[r.Seq]; ok && !reflect.DeepEqual(prev, r) {
			t.Fatalf("seq %d arrived twice with different content: %+v and %+v", r.Seq, prev, r)
		}
		out[r.Seq] = r
	}
	return out
}
