package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

const vendorConfig = `assume_clock_synced: true
devices:
  - name: inverter
    profile: %[4]s
    transport: tcp
    address: %[1]s
    poll_interval: 200ms
    timeout: 500ms
    allow_unguarded_control: %[3]t
safety:
  soc_min_pct: 20
  max_discharge_w: 1500
  max_charge_w: 1500
  ramp_w_per_s: 5000
  max_lease: 2h
uplink:
  broker: %[2]s
  boot_delay: 0s
`

// startVendorSim serves a vendor simulator on a loopback TCP port until
// the test ends.
func startVendorSim(t *testing.T, cfg sim.VendorConfig) (*sim.Vendor, string) {
	t.Helper()
	v, addr, _ := harness.StartVendorSim(t, cfg)
	return v, addr
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
			_, _, cfg := newAgentConfig(t, gw, fmt.Sprintf(vendorConfig, addr, mq.URL(), allow, "sungrow_sh"))
			agent, rec := startReporting(t, mq.URL(), gw, cfg)
			now := time.Now()
			ack := sendSetpoint(t, rec, mq.URL(), gw, powerLease("lease-1", gw, 1, now, now.Add(30*time.Minute), 1000))
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
			_, _, cfg := newAgentConfig(t, gw, fmt.Sprintf(vendorConfig, addr, mq.URL(), !c.guarded, c.profile))
			agent, rec := startReporting(t, mq.URL(), gw, cfg)
			now := time.Now()
			harness.Publish(t, mq.URL(), "hearth/v1/"+gw+"/setpoint", powerLease("lease-7", gw, 7, now, now.Add(time.Hour), -1200), false)
			// An unguarded device is commanded at most unguarded_max_w
			// (its default, 1000 W, here).
			want := hearth.Watts(-1200)
			if !c.guarded {
				want = -config.DefaultUnguardedMaxW
			}
			waitVendor(t, v, fmt.Sprintf("the battery to charge %g W", -want), func(st sim.VendorState) bool { return st.Forced && st.BatteryW == want })

			agent.Kill()
			clock.Advance(6 * time.Minute) // past SolarEdge's 300 s timeout
			st := v.State()
			if c.guarded && (st.Forced || st.Reverts == 0 || st.BatteryW != 300) {
				t.Fatalf("after the device timeout the battery runs %+v, want it back in self-consumption (300 W)", st)
			}
			if !c.guarded && (!st.Forced || st.BatteryW != want) {
				t.Fatalf("an unguarded battery runs %+v, want it still holding %g W (its cap)", st, want)
			}
			// An unguarded battery still holds the power: only the agent
			// can say that it resumed the lease.
			agent.Restart()
			rec.WaitFor(t, 20*time.Second, func([]harness.Message) bool {
				return slices.ContainsFunc(gatewayEvents(t, rec, gw, "lease_started"), func(e map[string]any) bool {
					return e["lease_id"] == "lease-7" && e["resumed"] == true
				})
			})
			waitVendor(t, v, "the restarted agent to resume the lease", func(st sim.VendorState) bool { return st.Forced && st.BatteryW == want })
		})
	}
}

// startSimProfile runs `hearthsim --profile NAME --modbus 127.0.0.1:0` and
// returns the address it serves.
func startSimProfile(t *testing.T, profile string, args ...string) string {
	t.Helper()
	var out harness.SyncBuffer
	cmd := exec.Command(hearthsimBin(t), append([]string{"--profile", profile, "--modbus", "127.0.0.1:0"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("hearthsim output:\n%s", out.String())
		}
	})
	re := regexp.MustCompile(`serving Modbus TCP on (\S+) `)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("hearthsim --profile %s did not start:\n%s", profile, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConfigCheckOnlineIdentifiesVendors: `hearth config check --online`
// reads each vendor device as its profile says, against `hearthsim
// --profile` (the real binaries), and says whether control is ready; a
// SolarEdge not set up for remote control gets the installer's step, and
// a device configured with another vendor's profile fails.
func TestConfigCheckOnlineIdentifiesVendors(t *testing.T) {
	t.Parallel()
	mq := startBroker(t)
	check := func(t *testing.T, profile, addr, extra string) (string, int) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "hearth.yaml")
		// 3 s a request, as a loaded machine needs; max_reading_age covers
		// two polls and three such requests (config bounds).
		text := fmt.Sprintf("gateway_id: gw-check\ndata_dir: %s\ndiag_socket: %s/hearth.sock\ndevices:\n  - {name: inverter, profile: %s, address: %q, unit_id: %d, timeout: 3s%s}\nsafety:\n  max_reading_age: 15s\nuplink:\n  broker: %s\n  boot_delay: 0s\n",
			dir, dir, profile, addr, unitOf(profile), extra, mq.URL())
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := hearthCLI(t, nil, "config", "check", "--online", cfg)
		return out + errOut, code
	}
	for _, c := range []struct {
		profile, extra, control string
		args                    []string
	}{
		{"sungrow_sh", "", "control: read only: no device-side timeout", nil},
		{"sungrow_sh", ", allow_unguarded_control: true", "control: ready", nil},
		{"solaredge_storedge", "", "control: NOT READY: se_ctrl_mode reads 1, control needs 4: set Storage Control Mode (0xE004)", nil},
		{"solaredge_storedge", "", "control: ready", []string{"--setting", "0xE004=4", "--setting", "0xE005=1"}},
		{"huawei_sun2000", "", "control: ready", nil},
		{"goodwe_et", ", allow_unguarded_control: true", "control: ready", nil},
		{"kostal_plenticore", "", "control: ready", nil},
		{"sma_storage", "", "control: ready", nil},
		{"alphaess", "", "control: ready", nil},
	} {
		t.Run(c.profile+c.extra+strings.Join(c.args, ""), func(t *testing.T) {
			t.Parallel()
			addr := startSimProfile(t, c.profile, c.args...) // at the vendor's own unit, unitOf
			out, code := check(t, c.profile, addr, c.extra)
			want := "device inverter (tcp " + addr + " unit " + strconv.Itoa(unitOf(c.profile)) + ", via direct): ok, profile " + c.profile + ": power_w "
			if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, c.control) {
				t.Fatalf("exit %d, output lacks %q or %q:\n%s", code, want, c.control, out)
			}
		})
	}
	t.Run("another vendor's profile", func(t *testing.T) {
		t.Parallel()
		addr := startSimProfile(t, "huawei_sun2000", "--unit", "1")
		out, code := check(t, "solaredge_storedge", addr, "")
		if code != 1 || !strings.Contains(out, "FAILED") || !strings.Contains(out, "not as profile solaredge_storedge") {
			t.Fatalf("exit %d (want 1), output:\n%s", code, out)
		}
	})
}

// unitOf is the unit id each simulated vendor answers by default.
func unitOf(profile string) int {
	switch profile {
	case "goodwe_et":
		return 247
	case "kostal_plenticore":
		return 71
	case "sma_storage":
		return 3
	case "alphaess":
		return 85
	}
	return 1
}

// TestCommissionSignOfVendors: `hearth commission`'s sign check (a small
// local charge through the control loop) passes on every vendor profile
// with control, against its simulator: the battery charges at the test
// power and hearth reads it with its own sign.
func TestCommissionSignOfVendors(t *testing.T) {
	t.Parallel()
	mq := startBroker(t)
	for _, c := range []struct {
		profile, extra string
		settings       map[uint16]uint16
	}{
		{"sungrow_sh", ", allow_unguarded_control: true", nil},
		{"solaredge_storedge", "", map[uint16]uint16{0xE004: 4, 0xE005: 1}},
		{"huawei_sun2000", "", nil},
		{"goodwe_et", ", allow_unguarded_control: true", nil},
		{"kostal_plenticore", "", nil},
		{"sma_storage", "", nil},
		{"alphaess", "", nil},
	} {
		t.Run(c.profile, func(t *testing.T) {
			t.Parallel()
			v, addr := startVendorSim(t, sim.VendorConfig{Profile: c.profile, LoadW: 300, Settings: c.settings})
			dir, sock, cfg := newAgentConfig(t, "gw-sign-"+c.profile, fmt.Sprintf(`devices:
  - {name: battery, profile: %s, address: %q, unit_id: %d, poll_interval: 250ms, timeout: 500ms%s}
uplink: {broker: %q, boot_delay: 0s}
`, c.profile, addr, v.Unit(), c.extra, mq.URL()))
			startAgent(t, cfg)
			waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
			r, out, _ := commissionTo(t, filepath.Join(dir, "commissioning.json"), "--socket", sock, "--config", cfg, "--for", "1m")
			if vd, d := r.check("sign"); vd != "pass" || !strings.Contains(d, "power_w -500 W") {
				t.Fatalf("sign check %s %q; want pass, charging at the test power\n%s", vd, d, out)
			}
		})
	}
}

// TestSMAStandbyFirmwareIsReported: an SMA whose firmware takes the
// battery command and leaves the battery in standby (evcc #17115) reads
// nothing back (the registers are write-only), so the lease is acked
// applied; the agent then sees the measured power not follow and says
// so, in a not_effective event and in its retained state, instead of
// reporting the command applied for as long as the lease runs.
func TestSMAStandbyFirmwareIsReported(t *testing.T) {
	t.Parallel()
	gw := "gw-sma-standby"
	mq := startBroker(t)
	v, addr := startVendorSim(t, sim.VendorConfig{Profile: "sma_storage", Quirk: "standby", LoadW: 300})
	_, _, cfg := newAgentConfig(t, gw, fmt.Sprintf(`assume_clock_synced: true
devices:
  - {name: inverter, profile: sma_storage, address: %q, unit_id: 3, poll_interval: 200ms, timeout: 500ms}
safety:
  max_charge_w: 1500
  ramp_w_per_s: 5000
  effective_within: 2s
  max_lease: 2h
uplink: {broker: %q, boot_delay: 0s}
`, addr, mq.URL()))
	_, rec := startReporting(t, mq.URL(), gw, cfg)
	now := time.Now()
	ack := sendSetpoint(t, rec, mq.URL(), gw, powerLease("lease-sb", gw, 1, now, now.Add(30*time.Minute), -1000))
	if ack.Result != hearth.ResultApplied {
		t.Fatalf("ack %+v, want applied (the writes go through)", ack)
	}
	waitVendor(t, v, "the battery command to be taken", func(st sim.VendorState) bool { return st.Forced && st.CommandW == 0 })
	rec.WaitFor(t, 30*time.Second, func([]harness.Message) bool {
		return slices.ContainsFunc(gatewayEvents(t, rec, gw, "not_effective"), func(e map[string]any) bool {
			return e["device"] == "inverter" && e["reason"] == "power" && e["want_w"] == -1000.0 && e["got_w"] == 0.0
		})
	})
	rec.WaitFor(t, 30*time.Second, func(ms []harness.Message) bool {
		for i := len(ms) - 1; i >= 0; i-- {
			if ms[i].Topic != "hearth/v1/"+gw+"/state" {
				continue
			}
			var st hearth.State
			return json.Unmarshal(ms[i].Payload, &st) == nil && slices.Contains(st.NotEffective, "inverter")
		}
		return false
	})
	if st := v.State(); st.BatteryW != 0 {
		t.Fatalf("the simulated firmware runs %v W, want its standby", st.BatteryW)
	}
}

// TestCommissionFailsOnSMAStandby: `hearth commission`'s sign check on the
// SMA firmware that takes the battery command and stays in standby fails
// on site, saying the battery held 0 W and that the agent found it not
// effective, and pointing at the vendor's installer steps, instead of
// passing on writes that went through.
func TestCommissionFailsOnSMAStandby(t *testing.T) {
	t.Parallel()
	mq := startBroker(t)
	_, addr := startVendorSim(t, sim.VendorConfig{Profile: "sma_storage", Quirk: "standby", LoadW: 300})
	dir, sock, cfg := newAgentConfig(t, "gw-sign-sma-standby", fmt.Sprintf(`devices:
  - {name: battery, profile: sma_storage, address: %q, unit_id: 3, poll_interval: 250ms, timeout: 500ms}
safety: {effective_within: 2s}
uplink: {broker: %q, boot_delay: 0s}
`, addr, mq.URL()))
	startAgent(t, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	r, out, code := commissionTo(t, filepath.Join(dir, "commissioning.json"), "--socket", sock, "--config", cfg, "--for", "15s")
	for _, c := range r.Checks {
		if !strings.HasPrefix(c.Name, "sign") {
			continue
		}
		if c.Verdict != "fail" || !strings.Contains(c.Detail, "power_w stayed at 0 W") || !strings.Contains(c.Hint, "not effective") || !strings.Contains(c.Hint, "docs/devices.md") {
			t.Fatalf("sign check %s %q (hint %q); want fail, 0 W held, the agent's not_effective named\n%s", c.Verdict, c.Detail, c.Hint, out)
		}
		if code == 0 {
			t.Fatalf("commission exited 0 with a failed sign check\n%s", out)
		}
		return
	}
	t.Fatalf("no sign check in the report:\n%s", out)
}
