package e2e

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/schemacheck"
)

// hearthCLI runs the hearth CLI, as the given user when cred is set, and
// returns its stdout, stderr and exit code.
func hearthCLI(t *testing.T, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	return runBinary(t, cred, hearthBin, args...)
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestStatusShowsDeadDeviceAndBrokenUplink runs the agent with one good
// device, one dead device and no broker, and reads it as a tech would.
func TestStatusShowsDeadDeviceAndBrokenUplink(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{InitialSoC: 70})
	dir := t.TempDir()
	sock := filepath.Join(dir, "hearth.sock")
	cfg := writeConfig(t, dir, "gw-diag", "tcp://"+deadAddr(t), "250ms",
		[]devSpec{{"battery", simAddr}, {"meter", deadAddr(t)}})
	startAgent(t, cfg)

	var st struct {
		Verdict string `json:"verdict"`
		Devices []struct {
			Name string `json:"name"`
			Up   bool   `json:"up"`
		} `json:"devices"`
		Uplink struct {
			Connected bool `json:"connected"`
		} `json:"uplink"`
		Buffer struct {
			PendingReadings int64 `json:"pending_readings"`
		} `json:"buffer"`
		Lease *struct {
			Source     string  `json:"source"`
			RemainingS float64 `json:"remaining_s"`
		} `json:"lease"`
	}
	// A lease is active too: a field tech's local one, as the uplink is down.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, stderr, code := hearthCLI(t, nil, "mode", "set", "idle", "--for", "20m", "--socket", sock)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mode set idle: exit %d, %s %s", code, out, stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var out string
	var code int
	for time.Now().Before(deadline) {
		out, _, code = hearthCLI(t, nil, "status", "--json", "--socket", sock)
		if code != 4 && json.Unmarshal([]byte(out), &st) == nil && st.Buffer.PendingReadings >= 4 && len(st.Devices) == 2 && st.Devices[0].Up {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code != 6 {
		t.Fatalf("status exit code %d, want 6 (degraded); output:\n%s", code, out)
	}
	if !st.Devices[0].Up || st.Devices[1].Up || st.Uplink.Connected {
		t.Errorf("status: battery up %t (want true), meter up %t (want false), uplink %t (want false)",
			st.Devices[0].Up, st.Devices[1].Up, st.Uplink.Connected)
	}
	if st.Lease == nil || st.Lease.Source != "local" || st.Lease.RemainingS < 60 || st.Lease.RemainingS > 1200 {
		t.Errorf("status lease = %+v, want the local lease with about 20 minutes left", st.Lease)
	}
	for _, want := range []string{"device down: meter", "uplink down", "readings buffered"} {
		if !strings.Contains(st.Verdict, want) {
			t.Errorf("verdict %q lacks %q", st.Verdict, want)
		}
	}
	if err := schemacheck.Validate("../docs/schemas/diag/status.json", []byte(out)); err != nil {
		t.Errorf("status --json: %v", err)
	}
	for cmd, schema := range map[string]string{"points": "points.json", "events": "events.json", "buffer": "buffer.json"} {
		doc, _, code := hearthCLI(t, nil, cmd, "--json", "--socket", sock)
		if err := schemacheck.Validate("../docs/schemas/diag/"+schema, []byte(doc)); code != 0 || err != nil {
			t.Errorf("%s --json (exit %d): %v", cmd, code, err)
		}
	}
	human, _, code := hearthCLI(t, nil, "status", "--socket", sock)
	if code != 6 {
		t.Errorf("human status exit code %d, want 6 (degraded)", code)
	}
	for _, want := range []string{"battery", "meter", "DOWN", "uplink  DOWN", "DEGRADED:", "from local until", "then auto"} {
		if !strings.Contains(human, want) {
			t.Errorf("human status lacks %q:\n%s", want, human)
		}
	}
	pts, _, code := hearthCLI(t, nil, "points", "battery", "--socket", sock)
	if code != 0 || !strings.Contains(pts, "soc_pct") || !strings.Contains(pts, "70") {
		t.Errorf("points battery (exit %d) does not show soc_pct 70 %%:\n%s", code, pts)
	}
	meter, _, _ := hearthCLI(t, nil, "points", "meter", "--socket", sock)
	if !strings.Contains(meter, "[comm_error]") {
		t.Errorf("points of the dead meter are not marked comm_error:\n%s", meter)
	}
	evs, _, code := hearthCLI(t, nil, "events", "--type", "device_down", "--socket", sock)
	if code != 0 || !strings.Contains(evs, "device=meter") {
		t.Errorf("events --type device_down (exit %d) lacks the meter:\n%s", code, evs)
	}
	_, stderr, code := hearthCLI(t, nil, "points", "nosuch", "--socket", sock)
	if code != 1 || !strings.Contains(stderr, `no device named "nosuch"`) {
		t.Errorf("points of an unknown device: exit %d, stderr %q", code, stderr)
	}

	// A user outside the socket's group is refused, with advice.
	_, stderr, code = hearthCLI(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "status", "--socket", sock)
	if code != 5 || !strings.Contains(stderr, "permission denied") || !strings.Contains(stderr, "sudo") {
		t.Errorf("status as nobody: exit %d, stderr %q; want exit 5 and advice", code, stderr)
	}
}

// TestStatusWithoutAgent: with no agent, the CLI says what to do and exits 4.
func TestStatusWithoutAgent(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, stderr, code := hearthCLI(t, nil, "status", "--socket", sock)
	if code != 4 {
		t.Errorf("exit code %d, want 4", code)
	}
	for _, want := range []string{"not running", "systemctl start hearth", "--direct"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("the error is not one line: %q", stderr)
	}
}
