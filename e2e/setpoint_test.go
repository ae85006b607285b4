package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/uplink"
)

const setpointConfig = `gateway_id: gw-sp
data_dir: %[1]s
diag_socket: %[1]s/hearth.sock
assume_clock_synced: true
devices:
  - name: battery
    transport: tcp
    address: %[2]s
    poll_interval: 200ms
    timeout: 500ms
safety:
  soc_min_pct: 20
  max_discharge_w: 1500
  max_charge_w: 1500
  ramp_w_per_s: 5000
  revert_timeout: 3s
  max_lease: 2h
uplink:
  broker: %[3]s
  boot_delay: 0s
  setpoint_keys:
    ops-1: %[4]s
`

// lease is a setpoint lease as the cloud writes it; only mode power
// carries a power.
func lease(version uint64, issued, until time.Time, mode string, powerW float64) []byte {
	l := map[string]any{
		"id": fmt.Sprintf("lease-%d", version), "version": version, "gateway": "gw-sp",
		"issued_at": issued.UTC().Format(time.RFC3339), "valid_until": until.UTC().Format(time.RFC3339),
		"mode": mode, "fallback": "auto",
	}
	if mode == "power" {
		l["power_w"] = powerW
	}
	b, _ := json.Marshal(l)
	return b
}

func sign(t *testing.T, payload []byte, keyID string, key ed25519.PrivateKey) []byte {
	t.Helper()
	env, err := uplink.SignSetpoint(payload, keyID, key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestSetpointsOverMQTT is the cloud's view: signed leases published with a
// plain MQTT client reach the real agent through a real Mosquitto; each
// message, good or hostile, gets its documented ack; the good one drives
// the simulator within the limits and is reported in …/state; a field
// tech's local override takes precedence and ends by itself.
func TestSetpointsOverMQTT(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	mq := startBroker(t)
	s, simAddr := startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	conf := fmt.Sprintf(setpointConfig, dir, simAddr, mq.URL(), base64.StdEncoding.EncodeToString(pub))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	const base = "hearth/v1/gw-sp"
	_, rec := startReporting(t, mq.URL(), "gw-sp", cfg)

	send := func(payload []byte) hearth.Ack {
		t.Helper()
		return sendSetpoint(t, rec, mq.URL(), "gw-sp", payload)
	}
	expect := func(what string, got hearth.Ack, version uint64, result hearth.Result, reason hearth.Reason) {
		t.Helper()
		if got.Version != version || got.Result != result || got.Reason != reason {
			t.Errorf("%s: ack %+v, want version %d result %s reason %q", what, got, version, result, reason)
		}
	}

	now := time.Now()
	good := lease(10, now, now.Add(30*time.Minute), "power", 4000)
	ack := send(sign(t, good, "ops-1", key))
	expect("a discharge above max_discharge_w", ack, 10, hearth.ResultClamped, "max_discharge_w")
	if ack.AppliedW == nil || *ack.AppliedW != 1500 {
		t.Errorf("clamped ack applied_w = %v, want 1500", ack.AppliedW)
	}
	waitSim(t, s, "the lease to discharge at the 1500 W limit", 15*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })
	rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool { return hasTopic(m, base+"/state", `"lease-10"`) })

	expect("the same lease again", send(sign(t, good, "ops-1", key)), 10, hearth.ResultDuplicate, "duplicate")
	expect("an older version", send(sign(t, lease(9, now, now.Add(10*time.Minute), "idle", 0), "ops-1", key)), 9, hearth.ResultStale, "stale")
	expect("an unsigned lease", send(lease(11, now, now.Add(10*time.Minute), "idle", 0)), 11, hearth.ResultRejected, "unsigned")
	expect("a stranger's key under a configured id", send(sign(t, lease(12, now, now.Add(10*time.Minute), "idle", 0), "ops-1", strangerKey)), 12, hearth.ResultRejected, "bad_signature")
	expect("an unknown key id", send(sign(t, lease(13, now, now.Add(10*time.Minute), "idle", 0), "ops-9", key)), 13, hearth.ResultRejected, "unknown_key")
	expect("an expired lease", send(sign(t, lease(14, now.Add(-time.Hour), now.Add(-time.Minute), "idle", 0), "ops-1", key)), 14, hearth.ResultExpired, "expired")
	expect("a lease a year long", send(sign(t, lease(15, now, now.AddDate(1, 0, 0), "idle", 0), "ops-1", key)), 15, hearth.ResultRejected, "lease_too_long")
	expect("a lease issued an hour ahead", send(sign(t, lease(16, now.Add(time.Hour), now.Add(90*time.Minute), "idle", 0), "ops-1", key)), 16, hearth.ResultRejected, "issued_in_future")
	// A signature made over other bytes than the payload it carries.
	var env map[string]string
	json.Unmarshal(sign(t, lease(17, now, now.Add(10*time.Minute), "idle", 0), "ops-1", key), &env)
	env["payload"] = base64.StdEncoding.EncodeToString(lease(17, now, now.Add(10*time.Minute), "power", 1500))
	forged, _ := json.Marshal(env)
	expect("a signature over other bytes", send(forged), 17, hearth.ResultRejected, "bad_signature")
	expect("malformed JSON", send([]byte(`{"id": "x", "version": 18,`)), 0, hearth.ResultRejected, "bad_json")

	// None of the refused messages changed what the battery does.
	time.Sleep(500 * time.Millisecond)
	if st := s.State(); st.BatteryW != 1500 {
		t.Errorf("after the refused setpoints the battery runs at %v W, want the lease's 1500 W", st.BatteryW)
	}

	// The cloud heard about it on …/event; what arrived is held to the
	// documented schemas when the test ends (subscribe).
	rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool {
		return hasTopic(m, base+"/event", `"lease_started"`) && hasTopic(m, base+"/event", `"clamped"`)
	})

	// A field tech takes over for a while; the cloud sees a local lease.
	sock := filepath.Join(dir, "hearth.sock")
	out, stderr, code := hearthCLI(t, nil, "mode", "set", "idle", "--for", "10m", "--socket", sock)
	if code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("mode set idle: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	waitSim(t, s, "the local idle override to hold 0 W", 15*time.Second, func(st sim.State) bool { return st.BatteryW == 0 })
	rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool { return hasTopic(m, base+"/state", `"source":"local"`) })
	leaseOut, _, _ := hearthCLI(t, nil, "lease", "--socket", sock)
	if !strings.Contains(leaseOut, "local") {
		t.Errorf("hearth lease during the override does not say local:\n%s", leaseOut)
	}
	if _, _, code := hearthCLI(t, nil, "mode", "clear", "--socket", sock); code != 0 {
		t.Fatalf("mode clear: exit %d", code)
	}
	waitSim(t, s, "the cloud lease to resume after the override", 15*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })
	// A commissioning test power: small, through safety, and only small.
	if _, stderr, code := hearthCLI(t, nil, "mode", "set", "power", "5kW", "--for", "10m", "--socket", sock); code == 0 {
		t.Errorf("a local test power of 5 kW was accepted (stderr %q); want at most ±1000 W", stderr)
	}
	if out, stderr, code := hearthCLI(t, nil, "mode", "set", "power", "-500W", "--for", "1m", "--socket", sock); code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("mode set power -500W: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	waitSim(t, s, "the local test power to charge at 500 W", 15*time.Second, func(st sim.State) bool { return st.BatteryW == -500 })
	if _, _, code := hearthCLI(t, nil, "mode", "clear", "--socket", sock); code != 0 {
		t.Fatalf("mode clear: exit %d", code)
	}
	if _, stderr, code := hearthCLI(t, nil, "mode", "set", "power", "--for", "10m", "--socket", sock); code == 0 {
		t.Errorf("mode set power without a power was accepted (stderr %q)", stderr)
	}
}
