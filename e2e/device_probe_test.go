package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestDeviceProbe: a device that answered and then went away is not
// hinted as a wrong port, its status says when the link asks it next,
// and once it is back `hearth device probe` brings it up at once instead
// of at that next probe, seconds away.
func TestDeviceProbe(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	sim := startSimTCP(t, addr, "--serial", "PROBE-0001")
	_, sock, cfg := newAgentConfig(t, "gw-probe", `devices:
  - {name: battery, address: "`+addr+`", poll_interval: 200ms, timeout: 300ms}
uplink: {broker: "tcp://`+deadAddr(t)+`", boot_delay: 0s}
`)
	startAgent(t, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool { return st.Devices[0].Up })
	sim.Process.Kill()
	sim.Wait()

	// Down long enough for the probes to back off past the wait of a
	// probe request.
	deadline := time.Now().Add(60 * time.Second)
	var d diag.DeviceReport
	for {
		d = waitStatus(t, sock, func(st diag.StatusReport) bool { return !st.Devices[0].Up }).Devices[0]
		if d.NextProbe != nil && time.Until(*d.NextProbe) > 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the next probe never backed off beyond 3 s: %+v", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(d.Hint, "wrong port") || !strings.Contains(d.Hint, "answered until") {
		t.Errorf("hint for a device that answered before: %q", d.Hint)
	}
	out, _, code := hearthCLI(t, nil, "device", "probe", "battery", "--socket", sock)
	if code != 1 || !strings.Contains(out, "does not answer") || !strings.Contains(out, "next probe in") {
		t.Errorf("probe of a device still gone: exit %d\n%s", code, out)
	}

	startSimTCP(t, addr, "--serial", "PROBE-0001")
	out, stderr, code := hearthCLI(t, nil, "device", "probe", "battery", "--socket", sock, "--json")
	var res diag.ProbeResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("device probe --json: %v\n%s%s", err, out, stderr)
	}
	if code != 0 || !res.WasDown || !res.Device.Up {
		t.Errorf("probe of a device back on its port: exit %d, %+v; want it up at once", code, res)
	}
	if _, _, code := hearthCLI(t, nil, "device", "probe", "nonesuch", "--socket", sock); code != 1 {
		t.Errorf("probe of an unknown device: exit %d, want 1", code)
	}
}

// startSimTCP runs `hearthsim --modbus addr` as a process of its own, for
// tests that kill the device and bring it back; it is killed when the test
// ends.
func startSimTCP(t *testing.T, addr string, args ...string) *exec.Cmd {
	t.Helper()
	c := exec.Command(hearthsimBin(t), append([]string{"--modbus", addr}, args...)...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	waitListening(t, addr)
	return c
}
