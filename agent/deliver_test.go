package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/uplink"
)

// TestHealthyUplinkSparesTheDisk runs the agent against a simulated device
// polled every 100 ms and a real Mosquitto: every reading arrives live, none is left
// in (or ever written to) the buffer's readings table, and the buffer
// commits far less often than once per poll cycle.
func TestHealthyUplinkSparesTheDisk(t *testing.T) {
	mq := harness.StartMosquitto(t)
	dir := t.TempDir()
	var devs string
	for i := range 1 {
		s := sim.New(sim.Config{InitialSoC: 60, Serial: fmt.Sprintf("LIVE%d", i)})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.ServeTCP(ctx, ln) }()
		t.Cleanup(func() { cancel(); <-done })
		devs += fmt.Sprintf("  - name: dev%d\n    address: %s\n    poll_interval: 100ms\n    timeout: 500ms\n", i, ln.Addr())
	}
	yaml := fmt.Sprintf("gateway_id: gw-live\ndata_dir: %s\ndiag_socket: %s\ndevices:\n%suplink:\n  broker: %s\n  boot_delay: 0s\n",
		dir, filepath.Join(dir, "s.sock"), devs, mq.URL())
	a := newTestAgent(t, yaml)
	rec := harness.Subscribe(t, mq.URL(), "hearth/v1/gw-live/telemetry/#")
	stop := runAgent(t, a)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	received := func(msgs []harness.Message) map[uint64]bool {
		seqs := map[uint64]bool{}
		for _, m := range msgs {
			b, err := uplink.DecodeTelemetry(m.Payload)
			if err != nil {
				t.Fatalf("telemetry %s: %v", m.Topic, err)
			}
			for _, r := range b.Readings {
				seqs[r.Seq] = true
			}
		}
		return seqs
	}
	const cycles = 48 // one reading each
	rec.WaitFor(t, 60*time.Second, func(m []harness.Message) bool { return len(received(m)) >= cycles })
	st, err := a.store.Stats()
	if err != nil {
		t.Fatal(err)
	}
	seqs := received(rec.Messages())
	for s := uint64(1); s <= cycles; s++ {
		if !seqs[s] {
			t.Errorf("seq %d was not delivered", s)
		}
	}
	for _, m := range rec.Messages() {
		if m.Topic != "hearth/v1/gw-live/telemetry" {
			t.Errorf("a reading went on %s with a healthy uplink", m.Topic)
		}
	}
	// Allowed: the seq reservation, and a few events (uplink connected)
	// written and acked. Not allowed: one or two commits per cycle.
	if st.Commits > cycles/8 {
		t.Errorf("%d commits for %d poll cycles delivered live, want at most %d", st.Commits, cycles, cycles/8)
	}
	if st.PendingReadings > 4 {
		t.Errorf("%d readings in the buffer with a healthy uplink, want (almost) none", st.PendingReadings)
	}
	t.Logf("%d readings delivered, %d commits, %d readings pending", len(seqs), st.Commits, st.PendingReadings)
}
