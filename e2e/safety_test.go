package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/safety"
)

const safetyConfig = `gateway_id: gw-safety
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
  soc_max_pct: 95
  max_discharge_w: 1500
  max_charge_w: 1500
  ramp_w_per_s: 5000
  revert_timeout: 3s
uplink:
  broker: %[3]s
  boot_delay: 0s
`

// seedLease writes a lease into the agent's lease state (data_dir's
// state.json, with its copy in the buffer) as a running agent would have
// persisted it, before the agent starts.
func seedLease(t *testing.T, dir string, sp hearth.Setpoint) {
	t.Helper()
	db, err := buffer.Open(filepath.Join(dir, "hearth.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := buffer.OpenState(filepath.Join(dir, "state.json"), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := safety.Lease{Setpoint: sp, Source: safety.SourceCloud, Received: sp.IssuedAt, Synced: true}
	b, _ := json.Marshal(l)
	if err := st.SetMeta("safety.lease", string(b)); err != nil {
		t.Fatal(err)
	}
	if err := st.SetMeta("safety.highest_version", strconv.FormatUint(sp.Version, 10)); err != nil {
		t.Fatal(err)
	}
}

func discharge(version uint64, from time.Time, d time.Duration, w float64, fallback hearth.Mode) hearth.Setpoint {
	p := hearth.Watts(w)
	return hearth.Setpoint{ID: fmt.Sprintf("e2e-%d", version), Version: version, IssuedAt: from, ValidUntil: from.Add(d),
		Mode: hearth.ModePower, PowerW: &p, Fallback: fallback}
}

func waitSim(t *testing.T, s *sim.Simulator, what string, limit time.Duration, cond func(sim.State) bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := s.State()
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; simulator: mode %s, battery %v W, SoC %.1f %%, reverted %v",
				limit, what, st.Mode, st.BatteryW, st.SoCPct, st.Reverted)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// maxOutWRte is the largest discharge rate written after index from.
func maxOutWRte(s *sim.Simulator, from int) int16 {
	out, _ := s.PointAddr(124, "OutWRte")
	var m int16
	for _, w := range s.Writes()[from:] {
		if w.Addr == out && w.Exception == 0 {
			m = max(m, int16(w.Values[0]))
		}
	}
	return m
}

// TestSafetyAgainstSimulator runs the real agent against the simulator
// over Modbus TCP: a resumed discharge lease at twice max_discharge_w is
// clamped; SoC falling through soc_min_pct stops the discharge; the agent
// SIGKILLed mid-lease leaves the simulator to revert by its own timer; a
// restarted agent resumes the unexpired lease and ignores an expired one.
func TestSafetyAgainstSimulator(t *testing.T) {
	t.Parallel()
	mq := startBroker(t)
	s, simAddr := startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000, Serial: "E2ESAFE"})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(safetyConfig, dir, simAddr, mq.URL())), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	seedLease(t, dir, discharge(5, now, 10*time.Minute, 3000, hearth.ModeAuto))

	agent := startAgent(t, cfg)
	waitSim(t, s, "the resumed lease to discharge at the 1500 W limit", 20*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })
	// 1500 W of WChaMax 5000 W is 30 %: 3000 at InOutWRte_SF -2.
	if m := maxOutWRte(s, 0); m > 3000 {
		t.Errorf("a 3000 W lease wrote OutWRte %d, above the 1500 W limit (3000)", m)
	}

	// SoC falls through soc_min_pct mid-lease.
	s.SetSoC(19)
	waitSim(t, s, "discharge to stop below soc_min_pct", 10*time.Second, func(st sim.State) bool { return st.BatteryW <= 0 })
	mark := len(s.Writes())
	time.Sleep(time.Second) // five polls at 200 ms
	if m := maxOutWRte(s, mark); m > 0 {
		t.Errorf("discharge written again (OutWRte %d) with SoC below soc_min_pct", m)
	}
	s.SetSoC(60)
	waitSim(t, s, "discharge to resume above the hysteresis band", 10*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })

	// SIGKILL: nothing refreshes the command; the device reverts itself.
	agent.Kill()
	waitSim(t, s, "the revert timer to drop the command", 10*time.Second, func(st sim.State) bool { return st.Reverted })
	if st := s.State(); st.Mode != sim.ModeSelfConsumption {
		t.Errorf("after revert: mode %s, want self-consumption", st.Mode)
	}

	// Restart within the lease: it resumes.
	agent = startAgent(t, cfg)
	waitSim(t, s, "the restarted agent to resume the lease", 20*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 && !st.Reverted })
	agent.Kill()
	waitSim(t, s, "the revert timer", 10*time.Second, func(st sim.State) bool { return st.Reverted })

	// Restart after the lease has expired: it is never applied again.
	seedLease(t, dir, discharge(6, now.Add(-time.Hour), 30*time.Minute, 1000, hearth.ModeAuto))
	mark = len(s.Writes())
	agent = startAgent(t, cfg)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(agent.Log(), "lease ended") {
		if time.Now().After(deadline) {
			t.Fatal("restarted agent did not report the expired lease as ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if m := maxOutWRte(s, mark); m > 0 {
		t.Errorf("an expired lease was applied after restart: OutWRte %d written", m)
	}
	if st := s.State(); st.BatteryW > 0 && st.Mode != sim.ModeSelfConsumption {
		t.Errorf("after restart with an expired lease: mode %s at %v W", st.Mode, st.BatteryW)
	}
	if _, err := agent.Stop(10 * time.Second); err != nil {
		t.Errorf("agent stop: %v", err)
	}
}

// TestLeaseExpiryTakesFallback runs a short lease with fallback idle and
// checks the agent switches to holding 0 W by itself when it ends.
func TestLeaseExpiryTakesFallback(t *testing.T) {
	t.Parallel()
	mq := startBroker(t)
	s, simAddr := startSim(t, sim.Config{InitialSoC: 60, Serial: "E2EEXP"})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(safetyConfig, dir, simAddr, mq.URL())), 0o600); err != nil {
		t.Fatal(err)
	}
	seedLease(t, dir, discharge(1, time.Now().UTC(), 8*time.Second, 1000, hearth.ModeIdle))
	agent := startAgent(t, cfg)
	waitSim(t, s, "the lease to discharge 1000 W", 20*time.Second, func(st sim.State) bool { return st.BatteryW == 1000 })
	waitSim(t, s, "the idle fallback after expiry", 20*time.Second, func(st sim.State) bool {
		return st.Mode == sim.ModeNet && st.BatteryW == 0
	})
	if !strings.Contains(agent.Log(), "lease ended") || !strings.Contains(agent.Log(), "fallback=idle") {
		t.Errorf("agent log does not report the lease ending with fallback idle")
	}
}
