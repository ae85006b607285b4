package faults

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// near says a simulated power is w, to within the rounding of the
// percentage rates it was written as.
func near[W ~float64](got W, w float64) bool { return math.Abs(float64(got)-w) < 1 }

// ackOf waits for the ack of version v and returns the first one.
func ackOf(t *testing.T, o *observer, v uint64) hearth.Ack {
	t.Helper()
	var got []hearth.Ack
	waitFor(t, fmt.Sprintf("the ack of version %d", v), 15*time.Second, func() bool {
		got = o.ledger().acksOf(v)
		return len(got) > 0
	})
	return got[0]
}

// fillInodes creates empty files in dir until its file system has no
// inode left: every new file fails with ENOSPC from then on, while files
// already open (the buffer's database and WAL) keep their room. It returns
// the files' folder, whose removal gives the inodes back.
func fillInodes(t *testing.T, dir string) string {
	t.Helper()
	fill := filepath.Join(dir, "inodes")
	if err := os.Mkdir(fill, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(fill, fmt.Sprint(i)))
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill inodes: %v", err)
			}
			return fill
		}
		f.Close()
	}
}

// TestLeaseStateWriteFails runs the agent's data_dir on a tmpfs whose
// inodes run out while it holds a lease: the state file (written to a new
// temporary file and renamed) can no longer be written, while the buffer's
// open database still can. A new lease must then be refused (not_durable)
// and not run: acked applied, a restart would forget its version and run a
// replay of an older one. When room returns, a newer lease runs, and after
// a restart the refused one stays refused.
func TestLeaseStateWriteFails(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "size=64m,nr_inodes=64")
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	s, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTSTATE"})
	s.SetPV(0)
	s.SetLoad(300)
	g := newGateway(t, "gw-state", gatewayOpts{Broker: mq.URL(), Poll: "200ms", PubKey: pub, Dir: dir, Devices: []device{{"battery", addr}}})
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 3, 20*time.Second)
	publish := func(v uint64, w float64) hearth.Ack {
		harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, fmt.Sprintf("st-%d", v), v, w, 10*time.Minute, key), false)
		return ackOf(t, o, v)
	}

	step(t, "a lease of 600 W runs")
	if a := publish(1, 600); a.Result != hearth.ResultApplied {
		t.Fatalf("lease 1: ack %+v, want applied", a)
	}
	waitFor(t, "the device to run 600 W", 15*time.Second, func() bool { return near(s.State().BatteryW, 600) })

	step(t, "the data_dir's file system runs out of inodes; a lease of 900 W arrives")
	fill := fillInodes(t, dir)
	if a := publish(2, 900); a.Result != hearth.ResultRejected || a.Reason != hearth.ReasonNotDurable {
		t.Errorf("lease 2 with the state file unwritable: ack %+v, want rejected, not_durable", a)
	}
	time.Sleep(2 * time.Second)
	if w := s.State().BatteryW; !near(w, 600) {
		t.Errorf("after the refused lease the device runs %v W, want lease 1's 600 W", w)
	}
	g.alive()

	step(t, "room returns; lease 3 of 800 W runs, then a restart, and lease 2 is replayed")
	if err := os.RemoveAll(fill); err != nil {
		t.Fatal(err)
	}
	if a := publish(3, 800); a.Result != hearth.ResultApplied {
		t.Errorf("lease 3 with room again: ack %+v, want applied", a)
	}
	waitFor(t, "the device to run 800 W", 15*time.Second, func() bool { return near(s.State().BatteryW, 800) })
	g.kill()
	g.start()
	waitFor(t, "the restarted agent to resume lease 3", 20*time.Second, func() bool {
		var l *hearth.LeaseInfo
		return g.diagGet("lease", &l) == nil && l != nil && l.Version == 3
	})
	n := len(o.ledger().acksOf(2))
	harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, "st-2", 2, 900, 10*time.Minute, key), false)
	var got []hearth.Ack
	waitFor(t, "the ack of the replayed lease 2", 15*time.Second, func() bool {
		got = o.ledger().acksOf(2)
		return len(got) > n
	})
	last := got[len(got)-1]
	if last.Result != hearth.ResultStale {
		t.Errorf("lease 2 replayed after the restart: ack %+v, want stale", last)
	}
}
