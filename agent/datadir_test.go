package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/config"
)

// testConfig is a config on dir whose device and broker are never dialled
// (New dials nothing).
func testConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	return testConfigOf(t, "gw-dir", dir, filepath.Join(dir, "s.sock"), "127.0.0.1:1")
}

// testConfigOf is testConfig with its gateway id, data_dir, socket and
// device address given.
func testConfigOf(t *testing.T, gateway, dir, sock, addr string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf("gateway_id: %s\ndata_dir: %s\ndiag_socket: %s\nassume_clock_synced: true\n"+
		"devices:\n  - name: battery\n    address: %s\nuplink:\n  broker: tcp://127.0.0.1:1\n",
		gateway, dir, sock, addr)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestSecondAgentOnDataDirRefused: while one agent holds a data_dir, a
// second New on it (of another gateway, socket and device) fails with the
// holder's pid and the directory, and leaves the buffer alone; once the
// first is closed, it succeeds.
func TestSecondAgentOnDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := New(testConfig(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "hearth.db")
	before, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	second, err := New(testConfigOf(t, "gw-dir-2", dir, filepath.Join(t.TempDir(), "s.sock"), "127.0.0.1:2"), nil)
	if !IsAnotherAgent(err) {
		t.Errorf("second agent's error %v is not IsAnotherAgent", err)
	}
	if err == nil {
		second.closeAll()
		first.closeAll()
		t.Fatal("a second agent on the same data_dir was built")
	}
	want := fmt.Sprintf("another hearth (pid %d) holds %s", os.Getpid(), dir)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("second agent's error %q does not say %q", err, want)
	}
	if after, err := os.Stat(db); err != nil || !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Errorf("the refused agent touched the buffer: %v", err)
	}
	first.closeAll()
	again, err := New(testConfig(t, dir), nil)
	if err != nil {
		t.Fatalf("after the first agent closed, New failed: %v", err)
	}
	again.closeAll()
}

// TestSecondAgentOfGatewayRefused: while one agent runs, a second New
// whose config shares only one thing with the first's (the gateway id,
// the diagnostics socket, or a device link) fails naming the holder's pid
// and config and what they share, and creates nothing in its own
// data_dir; a device on another unit of the same address is no conflict.
func TestSecondAgentOfGatewayRefused(t *testing.T) {
	run := t.TempDir()
	sock := filepath.Join(run, "hearth.sock")
	first := testConfigOf(t, "gw-one", t.TempDir(), sock, "192.0.2.7:502")
	first.Path = "/etc/hearth/first.yaml"
	a, err := New(first, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.closeAll()
	for _, tc := range []struct {
		name, gateway, sock, addr, want string
	}{
		{"only data_dir differs", "gw-one", sock, "192.0.2.7:502", "holds gateway gw-one"},
		{"same socket", "gw-two", sock, "192.0.2.8:502", "holds the diagnostics socket " + sock},
		{"same device link", "gw-two", filepath.Join(run, "two.sock"), "192.0.2.7:502", "holds device link 192.0.2.7:502 unit 1 (device battery)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			b, err := New(testConfigOf(t, tc.gateway, dir, tc.sock, tc.addr), nil)
			if err == nil {
				b.closeAll()
				t.Fatal("the second agent was built")
			}
			want := fmt.Sprintf("another hearth (pid %d, config /etc/hearth/first.yaml) %s", os.Getpid(), tc.want)
			if !IsAnotherAgent(err) || !strings.Contains(err.Error(), want) {
				t.Errorf("error %q (another agent: %v), want one saying %q", err, IsAnotherAgent(err), want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the refused agent made its data_dir (stat: %v)", err)
			}
		})
	}
	// Another unit behind the same address is another device.
	other := testConfigOf(t, "gw-three", t.TempDir(), filepath.Join(run, "three.sock"), "192.0.2.7:502")
	other.Devices[0].UnitID = 2
	c, err := New(other, nil)
	if err != nil {
		t.Fatalf("a device on unit 2 of the same address: %v", err)
	}
	c.closeAll()
}

// TestLeaseStateSurvivesCorruptBuffer: the lease and the highest version
// accepted are kept apart from the buffer, so a buffer found corrupt and
// started afresh takes neither along: the lease resumes, its version
// replayed is a duplicate and an older one is stale.
func TestLeaseStateSurvivesCorruptBuffer(t *testing.T) {
	dir := t.TempDir()
	a, err := New(testConfig(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	w := hearth.Watts(500)
	lease := func(v uint64) hearth.Setpoint {
		return hearth.Setpoint{ID: "l" + strconv.FormatUint(v, 10), Version: v, IssuedAt: now, ValidUntil: now.Add(10 * time.Minute),
			Mode: hearth.ModePower, PowerW: &w, Fallback: hearth.ModeAuto}
	}
	if ack := a.ctl.Submit(lease(7), a.clocks.Now()); ack.Result != hearth.ResultApplied {
		t.Fatalf("lease 7: %s (%s)", ack.Result, ack.Reason)
	}
	a.closeAll()

	db := filepath.Join(dir, "hearth.db")
	os.Remove(db + "-wal")
	if err := os.WriteFile(db, []byte(strings.Repeat("bad medium ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err = New(testConfig(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.closeAll()
	if aside, _ := filepath.Glob(db + ".corrupt-*"); len(aside) == 0 {
		t.Fatal("the corrupt buffer was not moved aside")
	}
	if l, ok := a.ctl.Lease(); !ok || l.Setpoint.Version != 7 {
		t.Errorf("after the corrupt buffer: lease %+v (active %v), want version 7 resumed", l.Setpoint, ok)
	}
	if ack := a.ctl.Submit(lease(7), a.clocks.Now()); ack.Result != hearth.ResultDuplicate {
		t.Errorf("lease 7 replayed: %s, want %s", ack.Result, hearth.ResultDuplicate)
	}
	if ack := a.ctl.Submit(lease(6), a.clocks.Now()); ack.Result != hearth.ResultStale {
		t.Errorf("lease 6 after 7: %s, want %s", ack.Result, hearth.ResultStale)
	}
}
