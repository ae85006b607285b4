package hw

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/hearth-energy/hearth/internal/harness"
)

func TestEStopIsEdgeTriggered(t *testing.T) {
	t.Parallel()
	pin := &gpiotest.Pin{N: "GPIO17", EdgesChan: make(chan gpio.Level)}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan bool, 10)
	done := make(chan error, 1)
	go func() { done <- WatchEStop(ctx, pin, false, func(on bool) { got <- on }) }()
	next := func() bool {
		select {
		case v := <-got:
			return v
		case <-time.After(10 * time.Second):
			t.Fatal("no e-stop change reported")
		}
		return false
	}
	if next() {
		t.Fatal("pulled-up, active-low input reported engaged at start")
	}
	// An unbuffered channel: the send completes only when the watcher is
	// waiting on the edge, not sampling a level.
	pin.EdgesChan <- gpio.Low
	if !next() {
		t.Fatal("falling edge did not engage the stop")
	}
	pin.EdgesChan <- gpio.High
	if next() {
		t.Fatal("rising edge did not release the stop")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if pin.Pull() != gpio.PullUp {
		t.Errorf("pull %s, want up for an active-low stop", pin.Pull())
	}
}

func TestOutputs(t *testing.T) {
	t.Parallel()
	c, led := &gpiotest.Pin{N: "C"}, &gpiotest.Pin{N: "L"}
	o := Outputs{Contactor: c, StatusLED: led}
	for _, tc := range []struct {
		estop, ok bool
		c, led    gpio.Level
	}{{false, true, gpio.High, gpio.High}, {false, false, gpio.High, gpio.Low}, {true, true, gpio.Low, gpio.Low}} {
		if err := o.Set(tc.estop, tc.ok); err != nil {
			t.Fatal(err)
		}
		if c.Read() != tc.c || led.Read() != tc.led {
			t.Errorf("estop %v ok %v: contactor %s led %s, want %s %s", tc.estop, tc.ok, c.Read(), led.Read(), tc.c, tc.led)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchdogFedOnlyWhileHealthy(t *testing.T) {
	t.Parallel()
	sock, msgs := harness.NotifySocket(t)
	hwPath := filepath.Join(t.TempDir(), "watchdog") // a file stands in for /dev/watchdog
	if err := os.WriteFile(hwPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := OpenNotifier(sock)
	if err != nil {
		t.Fatal(err)
	}
	wd, err := OpenWatchdog(hwPath)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	healthy := true
	f := NewFeeder(wd, n, time.Hour, "", func() bool { mu.Lock(); defer mu.Unlock(); return healthy })
	if err := n.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if fed, err := f.Feed(); !fed || err != nil {
		t.Fatalf("healthy feed: fed=%v err=%v", fed, err)
	}
	mu.Lock()
	healthy = false
	mu.Unlock()
	if fed, _ := f.Feed(); fed {
		t.Fatal("fed while unhealthy")
	}
	if err := n.Notify("STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(wd.Close(), n.Close()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "STOPPING=1", func() bool { m := msgs(); return len(m) > 0 && m[len(m)-1] == "STOPPING=1" })
	if got := strings.Join(msgs(), ","); got != "READY=1,WATCHDOG=1,STOPPING=1" {
		t.Errorf("systemd was told %q, want READY=1,WATCHDOG=1,STOPPING=1 (no feed while unhealthy)", got)
	}
	b, _ := os.ReadFile(hwPath)
	if string(b) != "1V" {
		t.Errorf("hardware watchdog got %q, want one feed then the magic close", b)
	}
}

// TestFeederRunsWithoutHardwareWatchdog: with no hardware watchdog (none
// configured, or /dev/watchdog held by systemd), systemd's watchdog is
// still fed by the running feeder.
func TestFeederRunsWithoutHardwareWatchdog(t *testing.T) {
	t.Parallel()
	sock, msgs := harness.NotifySocket(t)
	if _, err := OpenWatchdog(filepath.Join(t.TempDir(), "no", "watchdog")); err == nil {
		t.Fatal("opening a missing watchdog device succeeded")
	}
	n, err := OpenNotifier(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	f := NewFeeder(nil, n, 10*time.Millisecond, "", func() bool { return true })
	f.Start(func(err error) { t.Errorf("feed: %v", err) })
	waitFor(t, "two feeds", func() bool { return len(msgs()) >= 2 })
	f.Close()
	for _, m := range msgs() {
		if m != "WATCHDOG=1" {
			t.Errorf("systemd was told %q, want only WATCHDOG=1", m)
		}
	}
}

func TestWatchdogIntervalFromSystemd(t *testing.T) {
	t.Parallel()
	f := NewFeeder(nil, nil, time.Minute, "4000000", func() bool { return true })
	if f.Interval() != 2*time.Second {
		t.Errorf("interval %s with WATCHDOG_USEC=4s, want 2s", f.Interval())
	}
}
