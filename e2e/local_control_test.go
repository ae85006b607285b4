package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// simControl sends one line to a hearthsim control socket and returns its
// answer.
func simControl(t *testing.T, sock, line string) string {
	t.Helper()
	var c net.Conn
	var err error
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err = net.Dial("unix", sock); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("hearthsim control socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		t.Fatal(err)
	}
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("hearthsim control %q: %v", line, err)
	}
	return strings.TrimSpace(answer)
}

// TestLocalControlIsNamed: a battery switched to local control on site
// (hearthsim's control socket: model 802 LocRemCtl LOCAL) runs its own
// logic whatever model 124 holds. `hearth config check --online` says it
// is NOT READY and what to set, directly and through the running agent;
// the agent reports local_control 1, writes it no command and says why
// in a write_failed event naming the setting; switched back to remote,
// the battery takes the lease's power.
func TestLocalControlIsNamed(t *testing.T) {
	t.Parallel()
	gw := "gw-local"
	mq := startBroker(t)
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	ctl := filepath.Join(t.TempDir(), "sim.sock")
	startSimTCP(t, addr, "--serial", "LOCAL-1", "--control", ctl)
	if got := simControl(t, ctl, "control local"); got != "ok" {
		t.Fatalf("control local: %q", got)
	}
	_, sock, cfg := newAgentConfig(t, gw, fmt.Sprintf(`devices:
  - {name: battery, address: %q, poll_interval: 250ms, timeout: 500ms}
safety:
  ramp_w_per_s: 5000
  max_lease: 2h
uplink: {broker: %q, boot_delay: 0s}
`, addr, mq.URL()))

	notReady := "control: NOT READY: LocRemCtl reads 1 (LOCAL), control needs 0 (REMOTE): set the battery's control mode to remote (SunSpec model 802 LocRemCtl)"
	out, errOut, code := hearthCLI(t, nil, "config", "check", "--online", cfg)
	if !strings.Contains(out, "device battery (tcp "+addr+" unit 1, via direct): ok, SunSpec, models 1,103,124,802; "+notReady) {
		t.Errorf("config check --online of a battery under local control (exit %d) does not say NOT READY with the setting:\n%s%s", code, out, errOut)
	}

	_, rec := startReporting(t, mq.URL(), gw, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	if out, errOut, code := hearthCLI(t, nil, "config", "check", "--online", cfg); !strings.Contains(out, "via agent): ok, SunSpec, models 1,103,124,802; "+notReady) {
		t.Errorf("config check --online through the agent (exit %d) does not say NOT READY with the setting:\n%s%s", code, out, errOut)
	}
	rec.WaitFor(t, 20*time.Second, func(ms []harness.Message) bool {
		return slices.ContainsFunc(readings(t, ms, gw), func(r hearth.Reading) bool {
			p, ok := r.Points["local_control"]
			return ok && p.Good() && p.Value == 1
		})
	})

	var counts map[string]int
	if err := json.Unmarshal([]byte(simControl(t, ctl, "writes")), &counts); err != nil {
		t.Fatal(err)
	}
	before := counts["1"]
	now := time.Now()
	ack := sendSetpoint(t, rec, mq.URL(), gw, powerLease("lease-local", gw, 1, now, now.Add(30*time.Minute), -1000))
	if ack.Result != hearth.ResultApplied {
		t.Fatalf("ack %+v, want applied: safety approves the power, the device refuses it", ack)
	}
	rec.WaitFor(t, 20*time.Second, func([]harness.Message) bool {
		return slices.ContainsFunc(gatewayEvents(t, rec, gw, "write_failed"), func(e map[string]any) bool {
			msg, _ := e["error"].(string)
			return e["device"] == "battery" && strings.Contains(msg, "LocRemCtl reads 1 (LOCAL)") &&
				strings.Contains(msg, "set the battery's control mode to remote") && strings.Contains(msg, "nothing written")
		})
	})
	if len(gatewayEvents(t, rec, gw, "not_effective")) != 0 {
		t.Errorf("a not_effective event for a command never written: %v", gatewayEvents(t, rec, gw, "not_effective"))
	}
	// Nothing but releases (StorCtl_Mod 0) reached the battery: no rate,
	// no mode that would take over once it is switched to remote.
	if err := json.Unmarshal([]byte(simControl(t, ctl, "writes")), &counts); err != nil {
		t.Fatal(err)
	}
	var writes map[string][]sim.Write
	if err := json.Unmarshal([]byte(simControl(t, ctl, fmt.Sprintf("writes %d", counts["1"]-before))), &writes); err != nil {
		t.Fatal(err)
	}
	for _, w := range writes["1"] {
		if len(w.Values) != 1 || w.Values[0] != 0 {
			t.Errorf("under local control the agent wrote %v at %d, want no command", w.Values, w.Addr)
		}
	}

	if got := simControl(t, ctl, "control remote"); got != "ok" {
		t.Fatalf("control remote: %q", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var states map[string]sim.State
		if err := json.Unmarshal([]byte(simControl(t, ctl, "state")), &states); err != nil {
			t.Fatal(err)
		}
		if st := states["1"]; st.Mode == sim.ModeCharge && st.CommandW == -1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("back under remote control the battery runs %+v; want the lease's 1000 W charge", states["1"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}
