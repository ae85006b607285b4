package safety

import (
	"slices"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// run evaluates in at now and returns the first device's command.
func run(e *Evaluator, now time.Time, target Target, obs ...Observation) (Approved, Decision) {
	d := e.Evaluate(Input{Now: now, Target: target, Devices: obs})
	return d.Commands[0], d
}

// TestCellTripHeldWhenTheScaleFactorGoes: a cell over-voltage trip, then
// CellV_SF turns not-implemented (the point has no value): the trip holds
// at 0 W, and clears only on a good value inside the window less the
// hysteresis.
func TestCellTripHeldWhenTheScaleFactorGoes(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	now := t0
	next := func(p hearth.Point) (Approved, Decision) {
		now = now.Add(time.Second)
		return run(e, now, power(-2000), battery(now, 50, map[string]hearth.Point{PointCellVMax: p}))
	}
	next(hearth.V(3.4))
	if a, _ := next(hearth.V(3.8)); a.Power() != 0 {
		t.Fatalf("cell at 3.8 V: %s, want 0 W", a)
	}
	for _, p := range []hearth.Point{hearth.Q(hearth.QualityNotImplemented), hearth.Q(hearth.QualityCommError), hearth.Q(hearth.QualityOutOfRange), hearth.V(9)} {
		a, d := next(p)
		if a.Mode() != hearth.ModePower || a.Power() != 0 || !slices.Contains(d.Trips, hearth.RuleCellVMax) {
			t.Errorf("cell_v_max %+v after the trip: %s, trips %v; want held at 0 W, cell_v_max tripped", p, a, d.Trips)
		}
	}
	if a, _ := next(hearth.V(3.62)); a.Power() != 0 {
		t.Errorf("3.62 V is inside the window but not by the hysteresis: %s, want 0 W", a)
	}
	if a, d := next(hearth.V(3.55)); a.Power() >= 0 || slices.Contains(d.Trips, hearth.RuleCellVMax) {
		t.Errorf("3.55 V: %s, trips %v; want charging again", a, d.Trips)
	}
}

// TestImplausibleSoCHoldsTheBattery: SoC 250 % (raw 2500 at SF −1 read as
// a number) after good readings: neither charge nor discharge.
func TestImplausibleSoCHoldsTheBattery(t *testing.T) {
	t.Parallel()
	for _, soc := range []float64{250, -30} {
		e, _ := NewEvaluator(testLimits())
		run(e, t0, power(1500), battery(t0, 50, nil))
		a, d := run(e, t0.Add(time.Second), power(1500), battery(t0.Add(time.Second), soc, nil))
		if a.Mode() != hearth.ModePower || a.Power() != 0 || !slices.Contains(d.Trips, hearth.RuleReadingQuality) {
			t.Errorf("soc %g: %s, trips %v; want 0 W for an unknown SoC", soc, a, d.Trips)
		}
	}
}

// TestRampFromWhatTheDeviceHolds: five seconds of failed writes, then one
// that succeeds: the command ramps from what the device is measured doing,
// not from the last command approved.
func TestRampFromWhatTheDeviceHolds(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits()) // ramp 1000 W/s
	now := t0
	var a Approved
	for range 5 {
		a, _ = run(e, now, power(2500), battery(now, 50, nil)) // the device holds 0 W
		e.Unconfirmed("battery")
		now = now.Add(time.Second)
	}
	a, _ = run(e, now, power(2500), battery(now, 50, nil))
	if a.Power() > 0 {
		t.Errorf("first command after five seconds of failed writes: %v W, want the ramp to start from the 0 W the device holds", a.Power())
	}
	e.Confirm("battery", a.Power())
	now = now.Add(time.Second)
	if a, _ = run(e, now, power(2500), battery(now, 50, nil)); a.Power() != 1000 {
		t.Errorf("a second later: %v W, want 1000 (one second of ramp)", a.Power())
	}
	// The device holds less than approved (a rate truncated): the ramp
	// goes on from there.
	e.Confirm("battery", 900)
	now = now.Add(time.Second)
	if a, _ = run(e, now, power(2500), battery(now, 50, nil)); a.Power() != 1900 {
		t.Errorf("after a read-back of 900 W: %v W, want 1900", a.Power())
	}
}

// TestExportWithALaggingMeter: the meter updates every 5 s, the battery
// every second. The bound is not raised on a meter sample older than the
// last change of command, so export stays at the limit instead of
// climbing with every battery reading.
func TestExportWithALaggingMeter(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.ExportLimitW = watts(500)
	lim.RampWPerS = 100000
	e, _ := NewEvaluator(lim)
	const load = 1500.0 // house load, W; no PV
	batt := 0.0
	grid := &GridSample{W: hearth.Watts(batt - load), At: t0}
	worst := -1e9
	for s := 1; s <= 60; s++ {
		now := t0.Add(time.Duration(s) * time.Second)
		if s%5 == 0 {
			grid = &GridSample{W: hearth.Watts(batt - load), At: now}
		}
		d := e.Evaluate(Input{Now: now, Target: power(2500), Devices: []Observation{battery(now, 50, map[string]hearth.Point{PointPower: hearth.V(batt)})}, Grid: grid})
		batt = float64(d.Commands[0].Power()) // the battery follows within the second
		worst = max(worst, batt-load)
	}
	if worst > 500+1 {
		t.Errorf("export reached %.0f W with a 5 s meter, limit 500 W", worst)
	}
	if batt < 1900 {
		t.Errorf("discharge settled at %.0f W, want about 2000 (load + export limit)", batt)
	}
}

// TestExportCappedInAuto: with the fallback auto the device runs its own
// logic, but export over the limit while it discharges makes the agent
// cap the discharge; it hands back once export has stayed under the limit.
func TestExportCappedInAuto(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.ExportLimitW = watts(500)
	e, _ := NewEvaluator(lim)
	auto := Target{Mode: hearth.ModeAuto}
	obs := func(now time.Time, w float64) Observation {
		return battery(now, 50, map[string]hearth.Point{PointPower: hearth.V(w)})
	}
	now := t0.Add(time.Second)
	d := e.Evaluate(Input{Now: now, Target: auto, Devices: []Observation{obs(now, 1800)}, Grid: &GridSample{W: 300, At: now}})
	if a := d.Commands[0]; a.Mode() != hearth.ModeAuto {
		t.Fatalf("export under the limit: %s, want auto", a)
	}
	now = now.Add(time.Second)
	d = e.Evaluate(Input{Now: now, Target: auto, Devices: []Observation{obs(now, 1800)}, Grid: &GridSample{W: 2000, At: now}})
	if a := d.Commands[0]; a.Mode() != hearth.ModePower || a.Power() != 300 || d.Rule != hearth.RuleExport {
		t.Fatalf("exporting 2000 W (limit 500) in auto while discharging 1800 W: %s rule %q, want 300 W by %s", a, d.Rule, hearth.RuleExport)
	}
	for range 40 {
		now = now.Add(time.Second)
		d = e.Evaluate(Input{Now: now, Target: auto, Devices: []Observation{obs(now, 300)}, Grid: &GridSample{W: 100, At: now}})
	}
	if a := d.Commands[0]; a.Mode() != hearth.ModeAuto {
		t.Errorf("export back under the limit for 40 s: %s, want handed back", a)
	}
}

// TestALimitedDeviceHandsItsShareOn: a device that cannot take its share
// (SoC at its minimum, or not read) leaves it to the others.
func TestALimitedDeviceHandsItsShareOn(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	low := battery(t0, 10, nil) // at soc_min: no discharge
	b2 := battery(t0, 50, nil)
	b2.Reading.Device = "battery2"
	d := settle(e, Input{Now: t0, Target: power(3000), Devices: []Observation{low, b2}})
	if d.Commands[0].Power() != 0 || d.Commands[1].Power() != 2500 || d.Rule != hearth.RuleMaxDischarge || *d.TargetW != 2500 {
		t.Errorf("3000 W over a battery at soc_min and one free: %v, rule %q, target %v; want 0 and 2500 W, clamped by %s",
			d.Commands, d.Rule, *d.TargetW, hearth.RuleMaxDischarge)
	}
	d = settle(e, Input{Now: t0, Target: power(2000), Devices: []Observation{low, b2}})
	if d.Commands[1].Power() != 2000 || d.Rule != "" {
		t.Errorf("2000 W: %v rule %q, want all of it on battery2 and nothing bound", d.Commands, d.Rule)
	}
}

// TestSiteLimits: the site's own caps bind the sum over the devices.
func TestSiteLimits(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.SiteMaxDischargeW = watts(3000)
	e, _ := NewEvaluator(lim)
	b2 := battery(t0, 50, nil)
	b2.Reading.Device = "battery2"
	d := settle(e, Input{Now: t0, Target: power(5000), Devices: []Observation{battery(t0, 50, nil), b2}})
	if *d.TargetW != 3000 || d.Rule != hearth.RuleSiteDischarge || d.Commands[0].Power()+d.Commands[1].Power() != 3000 {
		t.Errorf("5000 W on two batteries, site cap 3000: %v rule %q", d.Commands, d.Rule)
	}
}

// TestDeviceThatContradictsItself: power of one sign while its own volts
// and amps say the other, and, separately, a response of the wrong sign
// to what it was commanded: held in the safe state, with the reason.
func TestDeviceThatContradictsItself(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	now := t0
	var a Approved
	var d Decision
	for range contradictions {
		now = now.Add(time.Second)
		a, d = run(e, now, power(1000), battery(now, 50, map[string]hearth.Point{
			PointPower: hearth.V(-1500), PointBatteryV: hearth.V(52), PointBatteryA: hearth.V(28.8)}))
	}
	if a.Mode() != hearth.ModeAuto || !slices.Contains(d.Trips, hearth.RuleImplausible) || d.Devices[0].Why[hearth.RuleImplausible] == "" {
		t.Errorf("power -1500 W with V×A +1500 W, %d times: %s, trips %v, why %v; want the safe state, implausible", contradictions, a, d.Trips, d.Devices[0].Why)
	}

	e, _ = NewEvaluator(testLimits())
	now = t0
	for range 40 { // commanded +1000 W; the device says it charges
		now = now.Add(time.Second)
		a, d = run(e, now, power(1000), battery(now, 50, map[string]hearth.Point{PointPower: hearth.V(-980)}))
		e.Confirm("battery", a.Power())
	}
	if a.Mode() != hearth.ModeAuto || !slices.Contains(d.Trips, hearth.RuleImplausible) {
		t.Errorf("commanded +1000 W for 40 s, measured -980 W: %s, trips %v; want implausible", a, d.Trips)
	}
}

// TestNoChargeBelowFreezing: the coldest cell at or below 0 °C stops
// charging; discharging goes on.
func TestNoChargeBelowFreezing(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	cold := map[string]hearth.Point{PointCellTempMin: hearth.V(-3), PointCellTempMax: hearth.V(2)}
	d := settle(e, Input{Now: t0, Target: power(-2000), Devices: []Observation{battery(t0, 50, cold)}})
	if d.Commands[0].Power() != 0 || d.Rule != hearth.RuleChargeTemp {
		t.Errorf("charging with a cell at -3 °C: %v rule %q, want 0 W by %s", d.Commands[0], d.Rule, hearth.RuleChargeTemp)
	}
	d = settle(e, Input{Now: t0, Target: power(1500), Devices: []Observation{battery(t0, 50, cold)}})
	if d.Commands[0].Power() != 1500 {
		t.Errorf("discharging with a cell at -3 °C: %v, want 1500 W", d.Commands[0])
	}
}
