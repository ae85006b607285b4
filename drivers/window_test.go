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

// TestFroniusWindowReferencesPerDirection: on a window device whose
// discharge reference (WDisChaRteMax, 7 kW) differs from its charge
// reference (WChaMax, 6 kW), the two rates of one command are cut to
// different resolutions (0.7 W and 0.6 W a step at InOutWRte_SF -2), so
// the window's bounds come out up to a step apart. The battery still runs
// the command, and HeldW and CommandedW say so: the bound farther from
// zero, within a step of the approved power and never beyond it, and
// never below what the battery runs, whether its own logic (set by the
// house load) sits below the window or above it. A command that saturates
// one rate (past 100 % of 6 kW) is a window wider than a step, forced all
// the same. Before, any window whose bounds differed was read as the
// device's own logic: 0 W for a battery discharging 1500 W.
func TestFroniusWindowReferencesPerDirection(t *testing.T) {
	t.Parallel()
	p, err := drivers.EmbeddedProfile("fronius_gen24")
	if err != nil {
		t.Fatal(err)
	}
	cfg := sim.Config{MaxChargeW: 6000, MaxDischargeW: 7000, InitialSoC: 60, PowerWindow: true, DischargeReference: true}
	const step = 0.7 // 0.01 % of the larger reference
	for _, c := range []struct {
		w         hearth.Watts
		load      float64
		held      float64
		saturated bool
	}{
		{1500, 500, 1500, false},  // OutWRte 21.42 % of 7 kW (1499.4 W), InWRte −25 % of 6 kW (1500 W)
		{1500, 3000, 1500, false}, // the house would take more: the battery is capped
		{-2000, 500, -1999.9, false},
		{1000.65, 500, 1000.3, false},  // OutWRte 14.29 % (1000.3 W), InWRte −16.67 % (1000.2 W): a window a step wide
		{1000.65, 3000, 1000.3, false}, // the battery at its top
		{6500, 500, 6499.5, true},      // OutWRte 92.85 % (6499.5 W), InWRte −100 % (6000 W): the battery runs 6000 W
		{6500, 8000, 6499.5, true},
	} {
		r := newStorageRigWith(t, time.Minute, cfg)
		r.sim.SetLoad(c.load)
		r.sim.SetPV(0)
		dev := drivers.NewSunSpecDevice("battery", r.bus, 1, drivers.WithProfile(p))
		st := drivers.NewStorage(dev, time.Minute, drivers.PowerWindow())
		status, err := st.Apply(context.Background(), approve(t, "battery", hearth.ModePower, c.w))
		if err != nil {
			t.Fatalf("%v W: %v", c.w, err)
		}
		if status.OutRefW != 7000 || status.InRefW != 6000 || status.Saturated != c.saturated {
			t.Fatalf("%v W: references %v and %v W, saturated %t; want 7000 and 6000 W, %t", c.w, status.OutRefW, status.InRefW, status.Saturated, c.saturated)
		}
		w, batt := float64(c.w), float64(r.sim.State().BatteryW)
		for name, got := range map[string]float64{"held": status.HeldW, "commanded": status.CommandedW} {
			if math.Abs(got-c.held) > 1e-6 || math.Abs(got) > math.Abs(w) {
				t.Errorf("%v W, load %v W: %s %v W, want %v W (status %+v)", c.w, c.load, name, got, c.held, status)
			}
		}
		if batt*w <= 0 || math.Abs(batt) > math.Abs(status.HeldW)+1e-9 || !c.saturated && math.Abs(batt-status.HeldW) > step {
			t.Errorf("%v W, load %v W: the battery runs %v W, held %v W: want held no less, and within %v W unless saturated", c.w, c.load, batt, status.HeldW, step)
		}
	}
}
