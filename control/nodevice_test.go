package control

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/internal/clocktest"
)

// TestNoControllableDeviceRefusesLeases: a controller with no device to
// command (a gateway of read-only profiles) refuses cloud leases and local
// overrides of any mode but auto, with a reason, instead of acking them
// applied with nothing written.
func TestNoControllableDeviceRefusesLeases(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(ctlT0)
	store, err := buffer.Open(filepath.Join(t.TempDir(), "hearth.db"), buffer.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c, err := New(Options{Limits: testSafetyLimits(), Store: store, Now: clock.Instant,
		Event: func(string, map[string]any) {}})
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	w := hearth.Watts(1000)
	for i, sp := range []hearth.Setpoint{
		{Mode: hearth.ModePower, PowerW: &w},
		{Mode: hearth.ModeIdle},
	} {
		sp.ID, sp.Version, sp.IssuedAt, sp.ValidUntil, sp.Fallback = "l", uint64(i+1), now, now.Add(time.Hour), hearth.ModeAuto
		if ack := c.Submit(sp, clock.Instant()); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonNoDevice {
			t.Errorf("%s lease: ack %+v, want rejected %s", sp.Mode, ack, hearth.ReasonNoDevice)
		}
	}
	auto := hearth.Setpoint{ID: "a", Version: 3, IssuedAt: now, ValidUntil: now.Add(time.Hour), Mode: hearth.ModeAuto, Fallback: hearth.ModeAuto}
	if ack := c.Submit(auto, clock.Instant()); ack.Result == hearth.ResultRejected {
		t.Errorf("auto lease: ack %+v, want it accepted (nothing to command, nothing claimed)", ack)
	}
	if _, err := c.Override(hearth.ModePower, &w, time.Minute); err == nil || !strings.Contains(err.Error(), string(hearth.ReasonNoDevice)) {
		t.Errorf("local power override: err %v, want %s", err, hearth.ReasonNoDevice)
	}
}
