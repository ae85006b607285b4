package drivers_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
)

// TestFroniusPowerWindow: on a device that reads model 124 as a power
// window (Fronius GEN24), the standard CHARGE + InWRte only caps charging
// and the battery keeps discharging into the house while the read-back
// passes; the fronius_gen24 profile's window style forces charge,
// discharge and 0 W, and releasing hands the battery back to its own
// logic.
func TestFroniusPowerWindow(t *testing.T) {
	t.Parallel()
	p, err := drivers.EmbeddedProfile("fronius_gen24")
	if err != nil || p.StorageControl != drivers.StorageControlWindow {
		t.Fatalf("fronius_gen24: %v, storage_control %q", err, p.StorageControl)
	}
	cfg := sim.Config{MaxChargeW: 5000, MaxDischargeW: 5000, InitialSoC: 60, PowerWindow: true}
	const load = 500

	naive := newStorageRigWith(t, time.Minute, cfg)
	naive.sim.SetLoad(load)
	naive.sim.SetPV(0)
	if _, err := naive.st.Apply(context.Background(), approve(t, "battery", hearth.ModePower, -2000)); err != nil {
		t.Fatalf("standard model 124 write: %v (its read-back should pass)", err)
	}
	if got := naive.sim.State().BatteryW; got != load {
		t.Fatalf("standard CHARGE + InWRte on a window device: battery %v W, want it still covering the %d W load", got, load)
	}

	r := newStorageRigWith(t, time.Minute, cfg)
	r.sim.SetLoad(load)
	r.sim.SetPV(0)
	dev := drivers.NewSunSpecDevice("battery", r.bus, 1, drivers.WithProfile(p))
	st := drivers.NewStorage(dev, time.Minute, drivers.PowerWindow())
	for _, c := range []struct {
		mode hearth.Mode
		w    hearth.Watts
		want float64
	}{
		{hearth.ModePower, -2000, -2000},
		{hearth.ModePower, 1500, 1500},
		{hearth.ModePower, 0, 0},
		{hearth.ModeAuto, 0, load},
	} {
		status, err := st.Apply(context.Background(), approve(t, "battery", c.mode, c.w))
		if err != nil {
			t.Fatalf("%s %v W: %v", c.mode, c.w, err)
		}
		if got := float64(r.sim.State().BatteryW); math.Abs(got-c.want) > 1 {
			t.Fatalf("%s %v W: battery %v W, want %v (status %+v)", c.mode, c.w, got, c.want, status)
		}
		if c.mode == hearth.ModePower && math.Abs(status.HeldW-c.want) > 1 {
			t.Fatalf("%s %v W: held %v W, want %v", c.mode, c.w, status.HeldW, c.want)
		}
	}
}
