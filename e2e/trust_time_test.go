package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

const syncedClock = "assume_clock_synced: true\n"

// status is the agent's `hearth status --json`.
func (a *trustAgent) status(t *testing.T) diag.StatusReport {
	t.Helper()
	out, stderr, _ := hearthCLI(t, nil, "status", "--socket", filepath.Join(a.dir, "hearth.sock"), "--json")
	var st diag.StatusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("hearth status --json: %v\n%s\n%s", err, out, stderr)
	}
	return st
}

// setState sets key in the agent's state file (the agent must be
// stopped): what an earlier agent left there.
func (a *trustAgent) setState(t *testing.T, key, value string) {
	t.Helper()
	path := filepath.Join(a.dir, "state.json")
	m := map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
	}
	m[key] = value
	b, _ := json.Marshal(m)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// stop stops the agent with SIGTERM.
func (a *trustAgent) stop(t *testing.T) {
	t.Helper()
	if _, err := a.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// start starts the stopped agent again and waits for a new reading.
func (a *trustAgent) start(t *testing.T) {
	t.Helper()
	n := len(readings(t, a.rec.Messages(), a.gw))
	a.proc.Restart()
	a.rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool { return len(readings(t, m, a.gw)) > n })
}

func (a *trustAgent) setClock(t *testing.T, offset string) {
	t.Helper()
	if err := os.WriteFile(a.offset, []byte(offset), 0o600); err != nil {
		t.Fatal(err)
	}
}

func runsW(w float64) func(sim.State) bool {
	return func(st sim.State) bool { return math.Abs(float64(st.BatteryW)-w) < 1 }
}

// TestRefusedLeaseNeverMovesTheFloor: a signed lease refused as stale
// whose issued_at is 400 days ahead must not raise the floor under true
// time: the next fresh lease runs, and after a restart too.
func TestRefusedLeaseNeverMovesTheFloor(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	a := startTrustAgentWith(t, "gw-floor-a", mq.URL(), pub, "", syncedClock)
	now := time.Now()
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 5, now, 10*time.Minute, 600, key)); ack.Result != hearth.ResultApplied {
		t.Fatalf("lease 5: %+v, want applied", ack)
	}
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 3, now.Add(400*24*time.Hour), 10*time.Minute, 900, key)); ack.Result != hearth.ResultStale {
		t.Fatalf("lease 3 issued 400 days ahead: %+v, want stale", ack)
	}
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 6, time.Now(), 10*time.Minute, 700, key)); ack.Result != hearth.ResultApplied {
		t.Errorf("a fresh lease after the refused one: %+v, want applied (a refused message moved the floor)", ack)
	}
	waitSim(t, a.sim, "the fresh lease to run", 15*time.Second, runsW(700))
	a.restart(t)
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 7, time.Now(), 10*time.Minute, 800, key)); ack.Result != hearth.ResultApplied {
		t.Errorf("a fresh lease after a restart: %+v, want applied", ack)
	}
	waitSim(t, a.sim, "the fresh lease after the restart to run", 15*time.Second, runsW(800))
}

// TestClockAheadAtStartDoesNotLockOut: one start with the wall clock a
// year ahead, taken for synchronised (assume_clock_synced), must not
// persist a floor a year ahead: the status says the clock is ahead of the
// floor, and after a restart with the clock right a fresh lease runs.
func TestClockAheadAtStartDoesNotLockOut(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	a := startTrustAgentWith(t, "gw-floor-b", mq.URL(), pub, "8760h", syncedClock)
	if fl := a.status(t).Agent.ClockFloor; fl == nil || !fl.WallAhead || fl.Floor == nil || fl.Floor.After(time.Now().Add(time.Hour)) {
		t.Errorf("status clock_floor %+v with the clock a year ahead: want wall_ahead and a floor not ahead of true time", fl)
	}
	a.stop(t)
	a.setClock(t, "0s")
	a.start(t)
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 1, time.Now(), 10*time.Minute, 600, key)); ack.Result != hearth.ResultApplied {
		t.Errorf("a fresh lease after a start with the clock a year ahead: %+v, want applied", ack)
	}
	waitSim(t, a.sim, "the fresh lease to run", 15*time.Second, runsW(600))
}

// TestDistrustedFloorAndReset: a floor a year ahead left in the state
// file (by an older agent, or by hand) is far ahead of the synchronised
// clock, the build time and every lease: it is distrusted (an event, the
// status) and a fresh lease runs. On an unsynchronised clock nothing can
// tell it is wrong, and every lease is expired: `hearth clock reset-floor
// --confirm GATEWAY_ID` sets it back, and a fresh lease runs.
func TestDistrustedFloorAndReset(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	a := startTrustAgentWith(t, "gw-floor-c", mq.URL(), pub, "0s", syncedClock)
	sock := filepath.Join(a.dir, "hearth.sock")
	yearAhead := time.Now().Add(365 * 24 * time.Hour).UTC().Format(time.RFC3339Nano)

	a.stop(t)
	a.setState(t, "clock.floor", yearAhead)
	a.start(t)
	a.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(a.events(t, "clock_floor_distrusted")) > 0 })
	if fl := a.status(t).Agent.ClockFloor; fl == nil || fl.Distrusted == nil || fl.Floor == nil || fl.Floor.After(time.Now().Add(time.Hour)) {
		t.Errorf("status clock_floor %+v, want the distrusted floor named and the floor back at true time", fl)
	}
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 1, time.Now(), 10*time.Minute, 600, key)); ack.Result != hearth.ResultApplied {
		t.Errorf("a fresh lease once the floor is distrusted: %+v, want applied", ack)
	}

	a.stop(t)
	a.setState(t, "clock.floor", yearAhead)
	a.setClock(t, "0s unsynced")
	a.start(t)
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 2, time.Now(), 10*time.Minute, 700, key)); ack.Result != hearth.ResultExpired {
		t.Fatalf("a fresh lease on an unsynced clock under a floor a year ahead: %+v, want expired (nothing tells the floor is wrong)", ack)
	}
	if _, _, code := hearthCLI(t, nil, "clock", "reset-floor", "--confirm", "gw-other", "--socket", sock); code == 0 {
		t.Error("reset-floor confirmed with another gateway's id was accepted")
	}
	if _, _, code := hearthCLI(t, nil, "clock", "reset-floor", "--socket", sock); code != 2 {
		t.Errorf("reset-floor without --confirm: exit %d, want 2 (usage)", code)
	}
	if out, _, code := hearthCLI(t, nil, "clock", "--help"); code != 0 || !strings.Contains(out, "reset-floor --confirm GATEWAY_ID") {
		t.Errorf("hearth clock --help: exit %d, %q", code, out)
	}
	out, stderr, code := hearthCLI(t, nil, "clock", "reset-floor", "--confirm", a.gw, "--socket", sock, "--json")
	var res diag.ResetFloorResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.From == nil || res.From.Before(time.Now().Add(300*24*time.Hour)) {
		t.Fatalf("hearth clock reset-floor: exit %d, %q %q; want the year-ahead floor named as reset", code, out, stderr)
	}
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 3, time.Now(), 10*time.Minute, 700, key)); ack.Result != hearth.ResultApplied {
		t.Errorf("a fresh lease after the reset: %+v, want applied", ack)
	}
	waitSim(t, a.sim, "the fresh lease to run", 15*time.Second, runsW(700))
	a.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(a.events(t, "clock_floor_reset")) == 1 })
}

// copyFile copies src to dst, executable, with a new modification time.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestBinaryWithoutBuildStamp builds hearth as a plain `go build
// -buildvcs=false` does: no stamped build date, no vcs.time. On a clock
// that booted into 1970 and never synced, a 24 h lease that ended 299
// days ago must not be held for 24 h. The binary file's own time is the
// next best floor: it expires the lease. A binary whose file time says
// nothing either (1970) has no floor at all: the status says so, and the
// lease is held at most 15 minutes (safety.UnverifiedHold).
func TestBinaryWithoutBuildStamp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := filepath.Join(dir, "hearth-plain")
	if out, err := exec.Command("go", "build", "-buildvcs=false", "-o", plain, "../cmd/hearth").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stale := filepath.Join(dir, "hearth-stale")
	copyFile(t, plain, stale)
	if err := os.Chtimes(stale, time.Unix(0, 0), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	old := func(gw string) []byte {
		return signedLease(t, gw, 1, time.Now().Add(-300*24*time.Hour), 24*time.Hour, 800, key)
	}

	a := startTrustAgentBin(t, plain, "gw-plain", mq.URL(), pub, "-490000h unsynced", "")
	if fl := a.status(t).Agent.ClockFloor; fl == nil || fl.BuildTimeFrom != "binary" || fl.BuildTime == nil {
		t.Errorf("status clock_floor %+v, want the build time taken from the binary file", fl)
	}
	if ack := a.send(t, mq.URL(), old(a.gw)); ack.Result != hearth.ResultExpired {
		t.Errorf("a lease that ended 299 days ago, binary time as the floor: %+v, want expired", ack)
	}

	b := startTrustAgentBin(t, stale, "gw-stale", mq.URL(), pub, "-490000h unsynced", "")
	if fl := b.status(t).Agent.ClockFloor; fl == nil || fl.BuildTimeFrom != "none" || fl.BuildTime != nil || fl.Floor != nil {
		t.Errorf("status clock_floor %+v, want no build time and no floor reported", fl)
	}
	if !strings.Contains(b.proc.Log(), "carries no build time") {
		t.Error("the agent did not log that it has no build time")
	}
	ack := b.send(t, mq.URL(), old(b.gw))
	if ack.HoldS == nil || *ack.HoldS > 900 {
		t.Errorf("a lease that ended 299 days ago, no floor at all: %+v, want held at most 900 s", ack)
	}

	// A file time a year ahead of a synchronised clock (copied on a
	// machine whose clock ran ahead) is no build time: taken for a floor,
	// it would expire every lease for a year.
	ahead := filepath.Join(dir, "hearth-ahead")
	copyFile(t, plain, ahead)
	future := time.Now().Add(365 * 24 * time.Hour)
	if err := os.Chtimes(ahead, future, future); err != nil {
		t.Fatal(err)
	}
	c := startTrustAgentBin(t, ahead, "gw-ahead", mq.URL(), pub, "", syncedClock)
	if fl := c.status(t).Agent.ClockFloor; fl == nil || fl.BuildTimeFrom != "none" {
		t.Errorf("status clock_floor %+v, want the file time a year ahead not taken for the build time", fl)
	}
	if ack := c.send(t, mq.URL(), signedLease(t, c.gw, 1, time.Now(), 10*time.Minute, 600, key)); ack.Result != hearth.ResultApplied {
		t.Errorf("a fresh lease under a binary stamped a year ahead: %+v, want applied", ack)
	}
}
