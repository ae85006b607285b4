package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

const trustConfig = `gateway_id: %[1]s
data_dir: %[2]s
diag_socket: %[2]s/hearth.sock
devices:
  - name: battery
    address: %[3]s
    poll_interval: 200ms
    timeout: 500ms
safety:
  max_discharge_w: 1500
  max_charge_w: 1500
  ramp_w_per_s: 5000
  revert_timeout: 3s
uplink:
  broker: %[4]s
  boot_delay: 0s
  setpoint_keys:
    ops-1: %[5]s
`

// trustAgent is one gateway of TestLeasesCannotBeReplayedOrMoved: a real
// agent process, its simulator, and what it publishes (held to the
// contract).
type trustAgent struct {
	gw   string
	sim  *sim.Simulator
	rec  *harness.Recorder
	dir  string
	cfg  string
	proc *harness.Agent
	// offset is the lab clock's offset file, when one was given.
	offset string
}

func startTrustAgent(t *testing.T, gw, broker string, pub ed25519.PublicKey, clockOffset string) *trustAgent {
	t.Helper()
	return startTrustAgentWith(t, gw, broker, pub, clockOffset, "")
}

// startTrustAgentWith is startTrustAgent with extra top-level config
// lines (e.g. "assume_clock_synced: true\n") before the devices.
func startTrustAgentWith(t *testing.T, gw, broker string, pub ed25519.PublicKey, clockOffset, extra string) *trustAgent {
	t.Helper()
	return startTrustAgentBin(t, hearthBin, gw, broker, pub, clockOffset, extra)
}

// startTrustAgentBin is startTrustAgentWith running the agent binary bin.
func startTrustAgentBin(t *testing.T, bin, gw, broker string, pub ed25519.PublicKey, clockOffset, extra string) *trustAgent {
	t.Helper()
	s, addr := startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000})
	// No sun and a steady 300 W house load: with no lease running, the
	// device's own logic covers the load at 300 W whatever the hour, so a
	// lease's 800 or 1000 W cannot be mistaken for it.
	s.SetPV(0)
	s.SetLoad(300)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	a := &trustAgent{gw: gw, sim: s, dir: dir, cfg: cfg}
	conf := strings.Replace(fmt.Sprintf(trustConfig, gw, dir, addr, broker, base64.StdEncoding.EncodeToString(pub)), "devices:\n", extra+"devices:\n", 1)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	if clockOffset != "" {
		offset := filepath.Join(dir, "clock-offset")
		a.offset = offset
		if err := os.WriteFile(offset, []byte(clockOffset), 0o600); err != nil {
			t.Fatal(err)
		}
		env = append(env, "HEARTH_CLOCK_OFFSET_FILE="+offset)
	}
	a.rec = subscribe(t, broker, "hearth/v1/"+gw+"/#")
	a.proc = harness.StartAgent(t, bin, harness.AgentOptions{Config: cfg, Env: env, Name: gw, Args: []string{"--log-level", "debug"}})
	a.rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) > 0 })
	return a
}

// send publishes payload to the agent's setpoint topic, whoever it was
// made for, and returns the ack.
func (a *trustAgent) send(t *testing.T, broker string, payload []byte) hearth.Ack {
	t.Helper()
	return sendSetpoint(t, a.rec, broker, a.gw, payload)
}

// signedLease is a lease for gw, signed with ops-1.
func signedLease(t *testing.T, gw string, version uint64, issued time.Time, d time.Duration, w float64, key ed25519.PrivateKey) []byte {
	t.Helper()
	return sign(t, powerLease(fmt.Sprintf("%s-%d", gw, version), gw, version, issued, issued.Add(d), w), "ops-1", key)
}

// TestLeasesCannotBeReplayedOrMoved runs two real gateways that trust the
// same key. An envelope signed for gw-a and published to gw-b is refused
// by gw-b (wrong_gateway) and moves nothing there, while gw-a runs it.
// gw-b's clock is in 1970 and unsynchronised, as after a power cut with a
// flat RTC: a 24-hour lease issued 300 days ago (what a broker redelivers
// after an outage) is expired by the floor under true time (the binary's
// build time), not run for 24 hours from receipt; a fresh lease still
// runs, held for no longer than it is valid.
func TestLeasesCannotBeReplayedOrMoved(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	a := startTrustAgent(t, "gw-a", mq.URL(), pub, "")
	b := startTrustAgent(t, "gw-b", mq.URL(), pub, "-490000h unsynced")

	now := time.Now()
	forA := signedLease(t, "gw-a", 1, now, 10*time.Minute, 1000, key)
	if ack := b.send(t, mq.URL(), forA); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonWrongGateway {
		t.Errorf("gw-a's envelope replayed to gw-b: ack %+v, want rejected, wrong_gateway", ack)
	}
	if ack := a.send(t, mq.URL(), forA); ack.Result != hearth.ResultApplied || ack.KeyID != "ops-1" {
		t.Errorf("gw-a's own envelope: ack %+v, want applied, key ops-1", ack)
	}
	waitSim(t, a.sim, "gw-a to run its lease", 15*time.Second, func(st sim.State) bool { return st.BatteryW == 1000 })

	old := signedLease(t, "gw-b", 2, now.Add(-300*24*time.Hour), 24*time.Hour, 1000, key)
	ack := b.send(t, mq.URL(), old)
	if ack.Result != hearth.ResultExpired || ack.Clock != hearth.ClockUnsynced {
		t.Errorf("a 300-day-old lease on gw-b's unsynced clock: ack %+v, want expired, clock unsynced", ack)
	}
	time.Sleep(time.Second)
	if st := b.sim.State(); st.Mode != sim.ModeSelfConsumption || st.BatteryW > 301 {
		t.Errorf("gw-b follows a lease: %s at %v W, want its own self_consumption at the 300 W load; neither the replayed nor the 300-day-old lease may run", st.Mode, st.BatteryW)
	}

	fresh := signedLease(t, "gw-b", 3, now, 10*time.Minute, 800, key)
	ack = b.send(t, mq.URL(), fresh)
	if ack.Result != hearth.ResultApplied || ack.HoldS == nil || *ack.HoldS > 600 || *ack.HoldS < 500 {
		t.Errorf("a fresh lease on gw-b: ack %+v, want applied and held about 600 s, no more", ack)
	}
	waitSim(t, b.sim, "gw-b to run the fresh lease", 15*time.Second, func(st sim.State) bool { return st.BatteryW == 800 })
}

// events returns the data of the agent's events of type typ.
func (a *trustAgent) events(t *testing.T, typ string) []map[string]any {
	t.Helper()
	return gatewayEvents(t, a.rec, a.gw, typ)
}

// TestKeysRotateAndRevokeWithoutRestart: a running lease signed by ops-1;
// the config gains ops-2 and revokes ops-1, and SIGHUP puts that in force:
// the lease ends at once (an event names the key), ops-1's signatures are
// refused, ops-2's accepted. Then `hearth keys reload` revokes ops-2 the
// same way. And the way out of a version lockout: after a lease at version
// 2^64-1 every other is stale, until `hearth lease reset-version`.
func TestKeysRotateAndRevokeWithoutRestart(t *testing.T) {
	t.Parallel()
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	mq := harness.StartMosquitto(t)
	a := startTrustAgent(t, "gw-keys", mq.URL(), pub1, "")
	sock := filepath.Join(a.dir, "hearth.sock")
	now := time.Now()
	signed := func(version uint64, id string, key ed25519.PrivateKey) []byte {
		return sign(t, powerLease(fmt.Sprintf("keys-%d", version), "gw-keys", version, now, now.Add(30*time.Minute), 700), id, key)
	}
	if ack := a.send(t, mq.URL(), signed(1, "ops-1", key1)); ack.Result != hearth.ResultApplied || ack.KeyID != "ops-1" {
		t.Fatalf("lease signed by ops-1: %+v", ack)
	}
	waitSim(t, a.sim, "the ops-1 lease to run", 15*time.Second, func(st sim.State) bool { return math.Abs(float64(st.BatteryW)-700) < 1 })

	// Rotate: add ops-2, revoke ops-1, and tell the agent.
	conf, err := os.ReadFile(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf = append(conf, []byte(fmt.Sprintf("    ops-2: %s\n  revoked_keys: [ops-1]\n", base64.StdEncoding.EncodeToString(pub2)))...)
	if err := os.WriteFile(a.cfg, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(a.proc.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	a.rec.WaitFor(t, 15*time.Second, func([]harness.Message) bool { return len(a.events(t, "lease_ended")) > 0 })
	if ended := a.events(t, "lease_ended")[0]; ended["reason"] != "key_revoked" || ended["key_id"] != "ops-1" {
		t.Errorf("lease_ended %v, want reason key_revoked naming ops-1", ended)
	}
	waitSim(t, a.sim, "the device to leave the revoked lease", 15*time.Second, func(st sim.State) bool { return st.Mode != sim.ModeDischarge })
	if ack := a.send(t, mq.URL(), signed(2, "ops-1", key1)); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonKeyRevoked {
		t.Errorf("lease signed by revoked ops-1: %+v, want key_revoked", ack)
	}
	if ack := a.send(t, mq.URL(), signed(3, "ops-2", key2)); ack.Result != hearth.ResultApplied || ack.KeyID != "ops-2" {
		t.Errorf("lease signed by the new ops-2: %+v, want applied", ack)
	}
	waitSim(t, a.sim, "the ops-2 lease to run", 15*time.Second, func(st sim.State) bool { return math.Abs(float64(st.BatteryW)-700) < 1 })

	// Revoke ops-2 through the CLI.
	conf = []byte(strings.Replace(string(conf), "revoked_keys: [ops-1]", "revoked_keys: [ops-1, ops-2]", 1))
	if err := os.WriteFile(a.cfg, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := hearthCLI(t, nil, "keys", "reload", "--socket", sock, "--json")
	var rep struct {
		Keys, Revoked []string
		LeaseEnded    bool `json:"lease_ended"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.LeaseEnded || len(rep.Revoked) != 2 {
		t.Errorf("hearth keys reload: exit %d, %q %q; want the lease ended and two keys revoked", code, out, stderr)
	}
	waitSim(t, a.sim, "the device to leave the lease of revoked ops-2", 15*time.Second, func(st sim.State) bool { return st.Mode != sim.ModeDischarge })

	// A config that no longer validates changes nothing.
	if err := os.WriteFile(a.cfg, append(conf, []byte("bogus_key: 1\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := hearthCLI(t, nil, "keys", "reload", "--socket", sock); code == 0 || !strings.Contains(stderr, "bogus_key") {
		t.Errorf("reload of a broken config: exit %d, stderr %q; want a failure naming the bad line", code, stderr)
	}
	if ack := a.send(t, mq.URL(), signed(4, "ops-2", key2)); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonKeyRevoked {
		t.Errorf("lease signed by ops-2 after a failed reload: %+v, want key_revoked still", ack)
	}
	if err := os.WriteFile(a.cfg, []byte(strings.Replace(string(conf), "revoked_keys: [ops-1, ops-2]", "revoked_keys: [ops-1]", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, code := hearthCLI(t, nil, "keys", "reload", "--socket", sock); code != 0 {
		t.Fatalf("keys reload: exit %d", code)
	}

	// The lockout and the way out.
	if ack := a.send(t, mq.URL(), signed(^uint64(0), "ops-2", key2)); ack.Result != hearth.ResultApplied {
		t.Fatalf("lease at version 2^64-1: %+v", ack)
	}
	if ack := a.send(t, mq.URL(), signed(5, "ops-2", key2)); ack.Result != hearth.ResultStale {
		t.Errorf("after version 2^64-1: %+v, want stale", ack)
	}
	if _, _, code := hearthCLI(t, nil, "lease", "reset-version", "--confirm", "gw-other", "--socket", sock); code == 0 {
		t.Error("reset-version confirmed with another gateway's id was accepted")
	}
	if out, stderr, code := hearthCLI(t, nil, "lease", "reset-version", "--confirm", "gw-keys", "--socket", sock); code != 0 || !strings.Contains(out, "18446744073709551615") {
		t.Fatalf("hearth lease reset-version: exit %d, %q %q", code, out, stderr)
	}
	if ack := a.send(t, mq.URL(), signed(5, "ops-2", key2)); ack.Result != hearth.ResultApplied {
		t.Errorf("after the reset, version 5: %+v, want applied", ack)
	}
	a.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(a.events(t, "version_reset")) == 1 })
}
