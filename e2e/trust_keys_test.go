package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// unsignedLease is a bare lease for gw.
func unsignedLease(gw string, version uint64, w float64) []byte {
	now := time.Now()
	return powerLease(fmt.Sprintf("%s-u%d", gw, version), gw, version, now, now.Add(10*time.Minute), w)
}

// rewrite replaces old with new in the agent's config file.
func (a *trustAgent) rewrite(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("config has no %q:\n%s", old, b)
	}
	if err := os.WriteFile(a.cfg, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// restart stops the agent (SIGTERM) and starts it again on its config,
// waiting for a reading from the new process.
func (a *trustAgent) restart(t *testing.T) {
	t.Helper()
	a.stop(t)
	a.start(t)
}

// TestRevokingTheLastKeyClosesTheGateway: the only setpoint key moves to
// revoked_keys and SIGHUP puts that in force. The key set is now empty,
// which on a gateway that never had keys means "accept unsigned"; here it
// must refuse every lease (no_keys), unsigned and signed, and go on doing
// so after a restart with no keys and no revocations left in the config
// (the gateway remembers it had keys). config check names the line. Only
// uplink.allow_unsigned: true opens it again.
func TestRevokingTheLastKeyClosesTheGateway(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	a := startTrustAgent(t, "gw-closed", mq.URL(), pub, "")
	sock := a.dir + "/hearth.sock"
	if ack := a.send(t, mq.URL(), unsignedLease(a.gw, 1, 1500)); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonUnsigned {
		t.Fatalf("unsigned lease with ops-1 configured: %+v, want unsigned", ack)
	}

	a.rewrite(t, "  setpoint_keys:\n    ops-1: "+base64.StdEncoding.EncodeToString(pub)+"\n", "  revoked_keys: [ops-1]\n")
	if err := syscall.Kill(a.proc.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	a.rec.WaitFor(t, 15*time.Second, func([]harness.Message) bool { return len(a.events(t, "keys_reloaded")) > 0 })
	if ack := a.send(t, mq.URL(), unsignedLease(a.gw, 2, 1500)); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonNoKeys {
		t.Errorf("unsigned 1500 W lease after the only key was revoked: %+v, want rejected, no_keys", ack)
	}
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 3, time.Now(), 10*time.Minute, 1500, key)); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonKeyRevoked {
		t.Errorf("lease signed by the revoked key: %+v, want key_revoked", ack)
	}
	if out, _, code := hearthCLI(t, nil, "keys", "--socket", sock); code != 0 || !strings.Contains(out, "no_keys") {
		t.Errorf("hearth keys with every key revoked: exit %d, %q; want it to say every setpoint is refused (no_keys)", code, out)
	}
	out, stderr, _ := hearthCLI(t, nil, "config", "check", a.cfg)
	if msg := out + stderr; !strings.Contains(msg, "uplink.revoked_keys") || !strings.Contains(msg, "no_keys") {
		t.Errorf("config check of a config with every key revoked says:\n%s\nwant a warning on uplink.revoked_keys naming no_keys", msg)
	}

	// No keys and no revocations at all: still closed, after a restart.
	a.rewrite(t, "  revoked_keys: [ops-1]\n", "")
	a.restart(t)
	if ack := a.send(t, mq.URL(), unsignedLease(a.gw, 4, 1500)); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonNoKeys {
		t.Errorf("unsigned lease after a restart with the keys removed from the config: %+v, want rejected, no_keys", ack)
	}
	time.Sleep(time.Second)
	if st := a.sim.State(); st.BatteryW > 301 {
		t.Errorf("the device runs %v W: an unsigned lease was applied", st.BatteryW)
	}

	// The explicit way back.
	a.rewrite(t, "  boot_delay: 0s\n", "  boot_delay: 0s\n  allow_unsigned: true\n")
	if _, stderr, code := hearthCLI(t, nil, "keys", "reload", "--socket", sock); code != 0 {
		t.Fatalf("keys reload: exit %d, %s", code, stderr)
	}
	if ack := a.send(t, mq.URL(), unsignedLease(a.gw, 5, 1000)); ack.Result != hearth.ResultApplied {
		t.Errorf("unsigned lease with allow_unsigned: true: %+v, want applied", ack)
	}
	waitSim(t, a.sim, "the unsigned lease to run", 15*time.Second, func(st sim.State) bool { return math.Abs(float64(st.BatteryW)-1000) < 1 })
}

// TestRevokedAtRestartEndsTheLease: a lease signed by ops-1 runs on a
// synchronised clock (so a restart would resume it); the config is edited
// to revoke ops-1 while the agent is down. The restarted agent must end
// the persisted lease (lease_ended, reason key_revoked, naming ops-1), not
// resume it, and the device returns to its fallback.
func TestRevokedAtRestartEndsTheLease(t *testing.T) {
	t.Parallel()
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	mq := harness.StartMosquitto(t)
	a := startTrustAgentWith(t, "gw-revstart", mq.URL(), pub1, "", syncedClock)
	if ack := a.send(t, mq.URL(), signedLease(t, a.gw, 1, time.Now(), 30*time.Minute, 700, key1)); ack.Result != hearth.ResultApplied || ack.KeyID != "ops-1" {
		t.Fatalf("lease signed by ops-1: %+v, want applied", ack)
	}
	waitSim(t, a.sim, "the ops-1 lease to run", 15*time.Second, func(st sim.State) bool { return math.Abs(float64(st.BatteryW)-700) < 1 })

	a.rewrite(t, "    ops-1: "+base64.StdEncoding.EncodeToString(pub1)+"\n",
		"    ops-2: "+base64.StdEncoding.EncodeToString(pub2)+"\n  revoked_keys: [ops-1]\n")
	a.restart(t)
	a.rec.WaitFor(t, 15*time.Second, func([]harness.Message) bool { return len(a.events(t, "lease_ended")) > 0 })
	if ended := a.events(t, "lease_ended")[0]; ended["reason"] != "key_revoked" || ended["key_id"] != "ops-1" {
		t.Errorf("lease_ended %v, want reason key_revoked naming ops-1", ended)
	}
	for _, e := range a.events(t, "lease_started") {
		if e["resumed"] == true {
			t.Errorf("the lease signed by the revoked key was resumed: %v", e)
		}
	}
	time.Sleep(2 * time.Second)
	if st := a.sim.State(); math.Abs(float64(st.BatteryW)-700) < 1 || st.Mode == sim.ModeDischarge {
		t.Errorf("after the restart the device is in %s at %v W: the revoked key's lease still runs", st.Mode, st.BatteryW)
	}
}
