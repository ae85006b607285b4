package drivers_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
)

// model124Profile is a fixed-map profile whose control section drives the
// SunSpec simulator's model 124 as its points say: the rates are percent
// of WChaMax at the scale factor InOutWRte_SF, which the profile names
// with sf:.
func model124Profile(t *testing.T, s *sim.Simulator) *drivers.Profile {
	t.Helper()
	return model124ProfileAs(t, s, "ram", "timeout: {kind: register, point: rvrt_s, value: 60s, reverts_to: self-consumption}")
}

// model124ProfileAs is model124Profile with the rates kept in storage and
// the control section's timeout (and budget) given by timeout.
func model124ProfileAs(t *testing.T, s *sim.Simulator, storage, timeout string) *drivers.Profile {
	t.Helper()
	at := func(model uint16, point string) uint16 {
		a, ok := s.PointAddr(model, point)
		if !ok {
			t.Fatalf("simulator has no %d.%s", model, point)
		}
		return a
	}
	src := fmt.Sprintf(`name: m124_fixed
points:
  - {name: power_w, address: %d, type: s16, sf: w_sf, unit: W}
  - {name: w_sf, address: %d, type: sunssf}
  - {name: soc_pct, address: %d, type: u16, sf: soc_sf, unit: "%%"}
  - {name: soc_sf, address: %d, type: sunssf}
  - {name: wchamax_w, address: %d, type: u16, sf: wchamax_sf, unit: W}
  - {name: wchamax_sf, address: %d, type: sunssf}
  - {name: storctl, address: %d, type: u16, writable: true, storage: ram}
  - {name: out_pct, address: %d, type: s16, sf: rte_sf, unit: pct, writable: true, storage: %s, min: -100, max: 100}
  - {name: in_pct, address: %d, type: s16, sf: rte_sf, unit: pct, writable: true, storage: %s, min: -100, max: 100}
  - {name: rvrt_s, address: %d, type: u16, unit: s, writable: true, storage: ram}
  - {name: rte_sf, address: %d, type: sunssf}
control:
  setpoint:
    style: split
    unit: pct
    reference: wchamax_w
    charge:    {point: in_pct,  mode: {point: storctl, value: 1}}
    discharge: {point: out_pct, mode: {point: storctl, value: 2}}
  %s
  release:
    writes: [{point: storctl, value: 0}]
`, at(802, "W"), at(802, "W_SF"), at(802, "SoC"), at(802, "SoC_SF"),
		at(124, "WChaMax"), at(124, "WChaMax_SF"), at(124, "StorCtl_Mod"),
		at(124, "OutWRte"), storage, at(124, "InWRte"), storage, at(124, "InOutWRte_RvrtTms"), at(124, "InOutWRte_SF"), timeout)
	p, err := drivers.ParseProfile("m124_fixed.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVendorScaleFactorOnWrittenPoint: a written point with sf: is
// encoded at the scale factor the device reports, read again before every
// command, so a rate at InOutWRte_SF -2 is written as hundredths of a
// percent, and after the device changes its scale factor to -1 the next
// command is written at the new scale, not ten times the power. A scale
// factor that reads not implemented refuses the command, not the release.
func TestVendorScaleFactorOnWrittenPoint(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, time.Minute)
	p := model124Profile(t, r.sim)
	dev := drivers.NewVendorDevice("battery", r.bus, 1, p, r.clock.Now)
	ctx := context.Background()
	out := r.reg("OutWRte")
	for _, c := range []struct {
		sf  int16
		w   hearth.Watts
		raw uint16
	}{
		{-2, 1500, 3000}, // 30 % of 5000 W at 10^-2
		{-1, 2000, 400},  // 40 % at 10^-1
	} {
		if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", c.sf); err != nil {
			t.Fatal(err)
		}
		st, err := dev.Apply(ctx, approve(t, "battery", hearth.ModePower, c.w))
		if err != nil {
			t.Fatalf("SF %d, %v W: %v", c.sf, c.w, err)
		}
		if got, err := r.bus.Read(ctx, 1, drivers.Holding, out, 1); err != nil || got[0] != c.raw {
			t.Errorf("SF %d, %v W: OutWRte %v (%v), want %d", c.sf, c.w, got, err, c.raw)
		}
		if math.Abs(st.HeldW-float64(c.w)) > 0.01 || math.Abs(st.Readback["out_pct"]-float64(c.w)/50) > 1e-9 {
			t.Errorf("SF %d, %v W: held %v W, out_pct read back %v; want %v W and %v %%", c.sf, c.w, st.HeldW, st.Readback["out_pct"], c.w, float64(c.w)/50)
		}
		r.clock.Advance(time.Second)
		if got := float64(r.sim.State().BatteryW); math.Abs(got-float64(c.w)) > 1 {
			t.Errorf("SF %d: the battery runs %v W, want %v W", c.sf, got, c.w)
		}
	}
	if err := r.sim.SetRaw(124, "InOutWRte_SF", 0x8000); err != nil {
		t.Fatal(err)
	}
	before := len(r.sim.Writes())
	if _, err := dev.Apply(ctx, approve(t, "battery", hearth.ModePower, 1000)); err == nil {
		t.Error("a command at a scale factor reading not implemented went through")
	}
	if w := r.sim.Writes()[before:]; len(w) != 0 {
		t.Errorf("wrote %+v at a scale factor reading not implemented", w)
	}
	// The release writes StorCtl_Mod, which has no scale factor: a rate's
	// scale factor gone bad does not stop the hand-back.
	if _, err := dev.Apply(ctx, approve(t, "battery", hearth.ModeAuto, 0)); err != nil {
		t.Fatalf("release with the rates' scale factor not implemented: %v", err)
	}
	if st := r.sim.State(); st.Mode != sim.ModeSelfConsumption {
		t.Errorf("after the release the simulator is in %s, want self_consumption", st.Mode)
	}
}

// TestVendorBudgetHoldsOnlyAtTheScaleItWrote: a control section whose
// rates are kept in unknown storage (the write budget paces them) holds a
// change within the deadband only while the device reads the scale factor
// the last command was written at. Once InOutWRte_SF steps from 0 to 1
// the 30 the device holds stands for 300 %, not the 30 % written: the
// next command is written at once, at the new scale, as model 124's own
// path does (TestStorageBudgetHoldsOnlyWhatTheDeviceRuns).
func TestVendorBudgetHoldsOnlyAtTheScaleItWrote(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, time.Minute)
	p := model124ProfileAs(t, r.sim, "unknown",
		"timeout: {kind: register, point: rvrt_s, value: 180s, reverts_to: self-consumption}\n  budget: {min_interval: 60s, deadband_w: 100}")
	dev := drivers.NewVendorDevice("battery", r.bus, 1, p, r.clock.Now)
	ctx := context.Background()
	out := r.reg("OutWRte")
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 0); err != nil {
		t.Fatal(err)
	}
	apply := func(w hearth.Watts) drivers.VendorStatus {
		t.Helper()
		r.clock.Advance(time.Second)
		st, err := dev.Apply(ctx, approve(t, "battery", hearth.ModePower, w))
		if err != nil {
			t.Fatalf("%v W: %v", w, err)
		}
		return st
	}
	held := func() uint16 {
		t.Helper()
		got, err := r.bus.Read(ctx, 1, drivers.Holding, out, 1)
		if err != nil {
			t.Fatal(err)
		}
		return got[0]
	}
	apply(1500)
	if got := held(); got != 30 {
		t.Fatalf("OutWRte %d after 1500 W at InOutWRte_SF 0, want 30 (30 %% of 5000 W)", got)
	}
	if st := apply(1520); !st.Deferred || st.HeldW != 1500 {
		t.Fatalf("a change within the deadband: %+v, want it held at 1500 W", st)
	}
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 1); err != nil {
		t.Fatal(err)
	}
	st := apply(1520)
	if got := held(); st.Deferred || got != 3 {
		t.Fatalf("after InOutWRte_SF stepped to 1: %+v, OutWRte %d; want 3 written at once (30 %% at 10^1), not the 30 the device now reads as 300 %%", st, got)
	}
	if b := r.sim.State().BatteryW; b != 1500 {
		t.Fatalf("the battery runs %v W, want 1500 W", b)
	}
}
