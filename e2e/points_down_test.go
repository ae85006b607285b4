package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestPointsWhileDeviceDown kills the simulator under a running agent and
// reads `hearth points` as a tech would: each point it had read still says
// its last good value and how long ago, and no point the device never
// answered for is listed.
func TestPointsWhileDeviceDown(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	sim := startSimTCP(t, addr, "--serial", "DOWN-0001", "--soc", "64")
	_, sock, cfg := newAgentConfig(t, "gw-down", `devices:
  - {name: battery, address: "`+addr+`", poll_interval: 250ms, timeout: 300ms}
uplink: {broker: "tcp://`+deadAddr(t)+`", boot_delay: 0s}
`)
	startAgent(t, cfg)
	points := func() []diag.PointReport {
		t.Helper()
		out, stderr, code := hearthCLI(t, nil, "points", "battery", "--json", "--socket", sock)
		if code != 0 {
			t.Fatalf("hearth points: exit %d: %s", code, stderr)
		}
		var pts []diag.PointReport
		if err := json.Unmarshal([]byte(out), &pts); err != nil {
			t.Fatalf("points --json: %v\n%s", err, out)
		}
		return pts
	}
	waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	before := map[string]diag.PointReport{}
	for _, p := range points() {
		before[p.Name] = p
	}
	if v := before["soc_pct"].Value; v == nil {
		t.Fatalf("soc_pct has no value while the device is up: %+v", before["soc_pct"])
	}

	sim.Process.Kill()
	sim.Wait()
	waitStatus(t, sock, func(st diag.StatusReport) bool { return !st.Devices[0].Up })
	time.Sleep(300 * time.Millisecond)
	down := points()
	if len(down) == 0 {
		t.Fatal("no points while the device is down")
	}
	for _, p := range down {
		b, known := before[p.Name]
		if !known {
			t.Errorf("%s is listed while the device is down, but was never read while it was up", p.Name)
			continue
		}
		if p.Value != nil || p.Quality != "comm_error" {
			t.Errorf("%s while the device is down: %+v, want comm_error", p.Name, p)
		}
		if b.Value != nil && (p.LastGood == nil || p.LastGoodTS == nil || p.LastGoodTS.Before(b.Time)) {
			t.Errorf("%s while the device is down: no last good value read since %v (it read %v while up)", p.Name, b.Time, *b.Value)
		}
		if b.Value == nil && p.LastGood != nil {
			t.Errorf("%s never had a value, yet says last good %v", p.Name, *p.LastGood)
		}
	}
	out, _, _ := hearthCLI(t, nil, "points", "battery", "--socket", sock)
	if !strings.Contains(out, "[comm_error]") || !strings.Contains(out, "last good ") || !strings.Contains(out, " ago") {
		t.Errorf("hearth points while the device is down does not show last good values:\n%s", out)
	}
	t.Logf("hearth points while down:\n%s", out)
}
