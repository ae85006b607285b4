package agent

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestReadyWithoutHardwareWatchdog runs the agent as systemd's Type=notify
// unit does: a real notify datagram socket in NOTIFY_SOCKET, and a
// hardware watchdog that cannot be opened (systemd may hold /dev/watchdog
// itself). systemd must still hear READY=1 once the loops run, then
// WATCHDOG=1 while they are healthy, and STOPPING=1 at shutdown; without
// READY=1 the unit would be killed at its start timeout, again and again.
func TestReadyWithoutHardwareWatchdog(t *testing.T) {
	dir := t.TempDir()
	sock, told := harness.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "400000") // feed every 200 ms

	_, addr := harness.StartSim(t, sim.Config{InitialSoC: 50})
	yaml := fmt.Sprintf("gateway_id: gw-notify\ndata_dir: %s\ndiag_socket: %s\nwatchdog_device: %s\n"+
		"devices:\n  - name: battery\n    address: %s\n    poll_interval: 200ms\nuplink:\n  broker: tcp://127.0.0.1:1\n  boot_delay: 0s\n",
		dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "no-such-dir", "watchdog"), addr)
	stop := runAgent(t, newTestAgent(t, yaml))
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(told(), "WATCHDOG=1") {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("after 30 s systemd was told %q, want READY=1 then WATCHDOG=1", told())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The datagrams are read on the listener's goroutine: let it catch up.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !slices.Contains(told(), "STOPPING=1"); {
		time.Sleep(10 * time.Millisecond)
	}
	got := told()
	if len(got) == 0 || got[0] != "READY=1" {
		t.Errorf("systemd was told %q first, want READY=1", got)
	}
	if got[len(got)-1] != "STOPPING=1" {
		t.Errorf("systemd was told %q last, want STOPPING=1", got[len(got)-1])
	}
	if n := strings.Count(strings.Join(got, ","), "READY=1"); n != 1 {
		t.Errorf("READY=1 sent %d times, want once", n)
	}
}
