package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/telemetry"
	"github.com/hearth-energy/hearth/uplink"
)

// BenchmarkDrainBacklog drains a 24-hour backlog (four devices at 1 Hz:
// 345,600 readings) from a real buffer file to a local Mosquitto with the
// agent's own delivery (telemetry.Deliverer over uplink.Session): each
// round sends the live readings first, then one backfill batch of 200, and
// acks after PUBACK. A live poll cycle is appended every real second
// meanwhile; live-latency-ms is the worst time from its append to its
// PUBACK. Run it with -benchtime=1x.
func BenchmarkDrainBacklog(b *testing.B) {
	const backlog = 4 * 86400
	mq := harness.StartMosquitto(b)
	up, err := uplink.New(uplink.Config{Broker: mq.URL(), GatewayID: "gw-bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up.Start(ctx)
	defer func() {
		c, stop := context.WithTimeout(context.Background(), 3*time.Second)
		defer stop()
		_ = up.Close(c)
	}()
	for deadline := time.Now().Add(20 * time.Second); !up.Connected(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("uplink did not connect")
		}
	}

	for b.Loop() {
		b.StopTimer()
		store, err := buffer.Open(filepath.Join(b.TempDir(), "hearth.db"), buffer.Options{MaxBytes: 256 << 20})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
		cycle := func(tick int) []hearth.Reading {
			rs := make([]hearth.Reading, 4)
			for d := range rs {
				rs[d] = hearth.Reading{
					Device: fmt.Sprintf("dev%d", d), Time: start.Add(time.Duration(tick) * time.Second),
					Clock: hearth.ClockSynced, Boot: "9f2c4a1b7e3d5f60", MonoMS: int64(tick) * 1000,
					Points: map[string]hearth.Point{
						"soc_pct": hearth.V(72.5), "power_w": hearth.V(-1500 + float64(tick%100)),
						"cell_v_max": hearth.V(3.412), "temp_c": hearth.V(24.5),
						"ac_hz": hearth.V(50.01), "ac_power_w": hearth.V(-1480),
						"grid_w": hearth.Q(hearth.QualityNotImplemented),
					},
				}
			}
			return rs
		}
		var batch []hearth.Reading
		for tick := range backlog / 4 {
			batch = append(batch, cycle(tick)...)
			if len(batch) >= 4000 {
				if _, err := store.Append(batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		if _, err := store.Append(batch); err != nil {
			b.Fatal(err)
		}
		// The monotonic clock stands a day after the backlog began, so
		// the backlog is old and each live cycle is fresh when appended.
		began := time.Now()
		since := func() time.Duration { return 24*time.Hour + time.Since(began) }
		d := telemetry.NewDeliverer(telemetry.DelivererOptions{
			Outbox: store, Uplink: up, Clock: telemetry.Clock{Boot: "9f2c4a1b7e3d5f60", Since: since},
		})
		b.StartTimer()

		var (
			mu       sync.Mutex
			worst    time.Duration
			appended = map[uint64]time.Time{} // live seqs not yet seen delivered
		)
		// The poller: a live cycle every real second, as the agent's writer.
		stopLive := make(chan struct{})
		liveDone := make(chan struct{})
		go func() {
			defer close(liveDone)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for tick := backlog / 4; ; tick++ {
				select {
				case <-stopLive:
					return
				case <-t.C:
				}
				rs := cycle(tick)
				for i := range rs {
					rs[i].MonoMS = since().Milliseconds()
				}
				got, err := store.Append(rs)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				for _, r := range got {
					appended[r.Seq] = time.Now()
				}
				mu.Unlock()
			}
		}()
		for {
			sent, err := d.DeliverOnce(ctx)
			if err != nil {
				b.Fatal(err)
			}
			newest, err := store.Newest(16)
			if err != nil {
				b.Fatal(err)
			}
			still := map[uint64]bool{}
			for _, r := range newest {
				still[r.Seq] = true
			}
			mu.Lock()
			for seq, at := range appended {
				if !still[seq] {
					worst = max(worst, time.Since(at))
					delete(appended, seq)
				}
			}
			mu.Unlock()
			if sent == 0 {
				break
			}
		}
		close(stopLive)
		<-liveDone
		took := time.Since(began)
		b.StopTimer()
		st, err := store.Stats()
		if err != nil || st.PendingReadings != 0 {
			b.Fatalf("after the drain: %d pending (%v)", st.PendingReadings, err)
		}
		b.ReportMetric(float64(backlog)/took.Seconds(), "readings/s")
		b.ReportMetric(took.Seconds(), "s/24h-backlog")
		b.ReportMetric(float64(worst.Milliseconds()), "live-latency-ms")
		_ = store.Close()
		b.StartTimer()
	}
}
