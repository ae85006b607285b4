package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/config"
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
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var msgs []string
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 512)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-read })
	told := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(msgs) }
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "400000") // feed every 200 ms

	_, addr := harness.StartSim(t, sim.Config{InitialSoC: 50})
	yaml := fmt.Sprintf("gateway_id: gw-notify\ndata_dir: %s\ndiag_socket: %s\nwatchdog_device: %s\n"+
		"devices:\n  - name: battery\n    address: %s\n    poll_interval: 200ms\nuplink:\n  broker: tcp://127.0.0.1:1\n  boot_delay: 0s\n",
		dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "no-such-dir", "watchdog"), addr)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(told(), "WATCHDOG=1") {
		if time.Now().After(deadline) {
			cancel()
			<-ran
			t.Fatalf("after 30 s systemd was told %q, want READY=1 then WATCHDOG=1", told())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
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
