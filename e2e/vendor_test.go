package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

const vendorConfig = `gateway_id: %[4]s
data_dir: %[1]s
diag_socket: %[1]s/hearth.sock
assume_clock_synced: true
devices:
  - name: inverter
    profile: %[6]s
    transport: tcp
    address: %[2]s
    poll_interval: 200ms
    timeout: 500ms
    allow_unguarded_control: %[5]t
safety:
  soc_min_pct: 20
  max_discharge_w: 1500
  max_charge_w: 1500
  ramp_w_per_s: 5000
  max_lease: 2h
uplink:
  broker: %[3]s
  boot_delay: 0s
`

// startVendorSim serves a vendor simulator on a loopback TCP port until
// the test ends.
func startVendorSim(t *testing.T, cfg sim.VendorConfig) (*sim.Vendor, string) {
	t.Helper()
	v, err := sim.NewVendor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.ServeTCP(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return v, ln.Addr().String()
}

// TestReadOnlyGatewayRefusesLeases: a gateway whose only device is read
// (sungrow_sh without allow_unguarded_control) refuses a power lease with
// a reason instead of acking it applied with nothing written; with the
// opt-in the same lease drives the battery, and the agent hands it back
// when it stops.
func TestReadOnlyGatewayRefusesLeases(t *testing.T) {
	t.Parallel()
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow_unguarded_control=%t", allow), func(t *testing.T) {
			t.Parallel()
			gw := fmt.Sprintf("gw-vendor-%t", allow)
			mq := startBroker(t)
			v, addr := startVendorSim(t, sim.VendorConfig{Profile: "sungrow_sh", LoadW: 300, PVW: 0})
			dir := t.TempDir()
			cfg := filepath.Join(dir, "hearth.yaml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf(vendorConfig, dir, addr, mq.URL(), gw, allow, "sungrow_sh")), 0o600); err != nil {
				t.Fatal(err)
			}
			base := "hearth/v1/" + gw
			rec := subscribe(t, mq.URL(), base+"/#")
			agent := startAgent(t, cfg)
			rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) > 0 })
			now := time.Now()
			l := map[string]any{"id": "lease-1", "version": 1, "gateway": gw,
				"issued_at": now.UTC().Format(time.RFC3339), "valid_until": now.Add(30 * time.Minute).UTC().Format(time.RFC3339),
				"mode": "power", "power_w": 1000, "fallback": "auto"}
			payload, _ := json.Marshal(l)
			harness.Publish(t, mq.URL(), base+"/setpoint", payload, false)
			var ack hearth.Ack
			rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool {
				for _, msg := range m {
					if msg.Topic == base+"/setpoint/ack" {
						return json.Unmarshal(msg.Payload, &ack) == nil
					}
				}
				return false
			})
			if !allow {
				if ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonNoDevice {
					t.Fatalf("ack %+v, want rejected %s", ack, hearth.ReasonNoDevice)
				}
				if w := v.Writes(); len(w) != 0 {
					t.Fatalf("a read-only device was written: %+v", w)
				}
				return
			}
			if ack.Result != hearth.ResultApplied {
				t.Fatalf("ack %+v, want applied", ack)
			}
			waitVendor(t, v, "the battery to discharge 1000 W", func(st sim.VendorState) bool { return st.Forced && st.BatteryW == 1000 })
			if _, err := agent.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			waitVendor(t, v, "the agent's stop to hand the battery back", func(st sim.VendorState) bool { return !st.Forced && st.BatteryW == 300 })
		})
	}
}

func waitVendor(t *testing.T, v *sim.Vendor, what string, cond func(sim.VendorState) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond(v.State()) {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %s: state %+v", what, v.State())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jumpClock is the real clock plus an offset the test can move: the
// simulated device lives through minutes while the agent is dead.
type jumpClock struct{ off atomic.Int64 }

func (c *jumpClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *jumpClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// TestVendorKilledMidLease: the real agent drives a vendor battery under
// a lease and is killed (SIGKILL). A guarded device (SolarEdge) drops the
// command by its own timeout; an unguarded one (Sungrow, with the opt-in)
// holds it, as its documents say. The lease survives the restart: the
// agent takes the battery back to the lease's power.
func TestVendorKilledMidLease(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		profile  string
		settings map[uint16]uint16
		guarded  bool
	}{
		{"solaredge_storedge", map[uint16]uint16{0xE004: 4, 0xE005: 1}, true},
		{"sungrow_sh", nil, false},
	} {
		t.Run(c.profile, func(t *testing.T) {
			t.Parallel()
			gw := "gw-kill-" + c.profile
			mq := startBroker(t)
			clock := &jumpClock{}
			v, addr := startVendorSim(t, sim.VendorConfig{Profile: c.profile, LoadW: 300, Settings: c.settings, Now: clock.Now})
			dir := t.TempDir()
			cfg := filepath.Join(dir, "hearth.yaml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf(vendorConfig, dir, addr, mq.URL(), gw, !c.guarded, c.profile)), 0o600); err != nil {
				t.Fatal(err)
			}
			base := "hearth/v1/" + gw
			rec := subscribe(t, mq.URL(), base+"/#")
			agent := startAgent(t, cfg)
			rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) > 0 })
			now := time.Now()
			l := map[string]any{"id": "lease-7", "version": 7, "gateway": gw,
				"issued_at": now.UTC().Format(time.RFC3339), "valid_until": now.Add(time.Hour).UTC().Format(time.RFC3339),
				"mode": "power", "power_w": -1200, "fallback": "auto"}
			payload, _ := json.Marshal(l)
			harness.Publish(t, mq.URL(), base+"/setpoint", payload, false)
			waitVendor(t, v, "the battery to charge 1200 W", func(st sim.VendorState) bool { return st.Forced && st.BatteryW == -1200 })

			agent.Kill()
			clock.Advance(6 * time.Minute) // past SolarEdge's 300 s timeout
			st := v.State()
			if c.guarded && (st.Forced || st.Reverts == 0 || st.BatteryW != 300) {
				t.Fatalf("after the device timeout the battery runs %+v, want it back in self-consumption (300 W)", st)
			}
			if !c.guarded && (!st.Forced || st.BatteryW != -1200) {
				t.Fatalf("an unguarded battery runs %+v, want it still holding -1200 W", st)
			}
			agent.Restart()
			waitVendor(t, v, "the restarted agent to resume the lease", func(st sim.VendorState) bool { return st.Forced && st.BatteryW == -1200 })
		})
	}
}
