package safety

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// down is the reading of a poll that reached nothing: every point the
// driver knows is comm_error, including points this battery never had.
func down(name string, at time.Time) Observation {
	pts := map[string]hearth.Point{}
	for _, p := range hearth.RulePoints {
		pts[p.String()] = hearth.Q(hearth.QualityCommError)
	}
	return Observation{Reading: hearth.Reading{Device: name, Time: at, Points: pts}, At: at}
}

// pair steps an evaluator over battery1, always healthy, and the battery2
// observation it is given, a second apart, under target.
func pair(t *testing.T, lim Limits, target Target) func(b2 Observation) Decision {
	t.Helper()
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	return func(b2 Observation) Decision {
		now = now.Add(time.Second)
		b2.At = now
		d := e.Evaluate(Input{Now: now, Target: target, Devices: []Observation{named(battery(now, 50, nil), "battery1"), b2}})
		if a := d.Commands[0]; a.Mode() == hearth.ModePower {
			e.Confirm("battery1", a.Power())
		}
		return d
	}
}

func named(o Observation, name string) Observation {
	o.Reading.Device = name
	return o
}

// A lost link is one device_down on the device that is down, not a trip of
// every rule whose point came back comm_error (cell temperatures on a
// battery that has no such sensor); and it clears with nothing left.
func TestLostLinkIsOneDeviceDown(t *testing.T) {
	t.Parallel()
	step := pair(t, testLimits(), power(2000))
	for range 5 {
		step(named(battery(t0, 50, nil), "battery2"))
	}
	d := step(down("battery2", t0))
	if !slices.Equal(d.Trips, []hearth.Rule{hearth.RuleDeviceDown}) {
		t.Fatalf("battery2 unreadable: trips %v, want only %s", d.Trips, hearth.RuleDeviceDown)
	}
	b1, b2 := d.Devices[0], d.Devices[1]
	if b1.Device != "battery1" || len(b1.Trips) != 0 || b1.Down || b1.Held != "" {
		t.Errorf("battery1 %+v, want ok and taking its share", b1)
	}
	if b2.Device != "battery2" || !b2.Down || !slices.Equal(b2.Trips, []hearth.Rule{hearth.RuleDeviceDown}) || b2.Held != hearth.RuleDeviceDown {
		t.Errorf("battery2 %+v, want down, held by %s", b2, hearth.RuleDeviceDown)
	}
	if a := d.Commands[1]; a.Mode() != hearth.ModePower || a.Power() != 0 {
		t.Errorf("battery2 down: %s, want 0 W", a)
	}
	d = step(named(battery(t0, 50, nil), "battery2"))
	if len(d.Trips) != 0 || d.Devices[1].Down {
		t.Errorf("battery2 answers again: trips %v, %+v; want nothing tripped", d.Trips, d.Devices[1])
	}
}

// A point the device has given and then cannot read is unknown: its rules
// hold the device. Before it ever gave one, no rule judges it.
func TestPointLostAfterItWasSeen(t *testing.T) {
	t.Parallel()
	e, err := NewEvaluator(testLimits())
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Now: t0, Target: power(1000), Devices: []Observation{battery(t0, 50, nil)}}
	settle(e, in)
	in.Now = in.Now.Add(20 * time.Second)
	in.Devices = []Observation{battery(in.Now, 50, map[string]hearth.Point{PointTemp: hearth.Q(hearth.QualityCommError)})}
	d := settle(e, in)
	if a := d.Commands[0]; a.Power() != 0 || a.Rule() != hearth.RuleReadingQuality || !slices.Contains(d.Trips, hearth.RuleTempMax) {
		t.Errorf("temp_c seen, then comm_error: %s rule %q trips %v; want 0 W by %s", a, a.Rule(), d.Trips, hearth.RuleReadingQuality)
	}
}

// Trips name their device: with two batteries, the one too hot is held and
// named, the other takes the site's power.
func TestTripsNameTheirDevice(t *testing.T) {
	t.Parallel()
	e, err := NewEvaluator(testLimits())
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Now: t0, Target: power(2000), Devices: []Observation{
		named(battery(t0, 50, nil), "battery1"),
		named(battery(t0, 50, map[string]hearth.Point{PointTemp: hearth.V(60)}), "battery2")}}
	d := settle(e, in)
	if len(d.Devices[0].Trips) != 0 || !slices.Equal(d.Devices[1].Trips, []hearth.Rule{hearth.RuleTempMax}) || d.Devices[1].Held != hearth.RuleTempMax {
		t.Errorf("battery2 at 60 °C: %+v; want temp_c_max on battery2 only", d.Devices)
	}
	if d.Commands[0].Power() != 2000 || d.Commands[1].Power() != 0 {
		t.Errorf("commands %v, want 2000 W on battery1, 0 W on battery2", d.Commands)
	}
}

// Two batteries under a site cap of 3000 W: when battery2 cannot be read
// while it holds 1500 W, battery1 does not take battery2's share on top:
// until battery2's revert timer lapses it counts at 1500 W, and the site
// stays at its cap.
func TestUnreadDeviceCountsAtWhatItMayHold(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.SiteMaxDischargeW = watts(3000)
	step := pair(t, lim, power(5000))
	var d Decision
	for range 10 {
		d = step(named(battery(t0, 50, nil), "battery2"))
	}
	if d.Commands[0].Power() != 1500 || d.Commands[1].Power() != 1500 {
		t.Fatalf("both read: %v, want 1500 W each", d.Commands)
	}
	b2 := down("battery2", t0)
	b2.MayHold = watts(1500)
	for range 5 {
		d = step(b2)
	}
	if a := d.Commands[0]; a.Power() != 1500 {
		t.Errorf("battery2 unread, may hold 1500 W: battery1 %s, want 1500 W (site cap 3000 W)", a)
	}
	if d.TargetW == nil || *d.TargetW != 3000 {
		t.Errorf("site total %v, want 3000 W with battery2's 1500 W counted", d.TargetW)
	}
	b2.MayHold = nil // its revert timer has lapsed: it is back on its own logic
	d = step(b2)
	if a := d.Commands[0]; a.Power() != 2500 {
		t.Errorf("battery2's timer lapsed: battery1 %s, want 2500 W (its own limit)", a)
	}
}

// selfConsumption runs a self_consumption loop over one battery whose
// true power moves follow of the way to each command per reading, and
// which reports its power multiplied by sign (-1: inverted, with nothing
// else in the reading to contradict it). It returns the last decision.
func selfConsumption(t *testing.T, sign, follow float64, steps int) Decision {
	t.Helper()
	lim := testLimits()
	lim.RampWPerS = 5000
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	const load, pv = 900, 0
	now, actual := t0, 0.0
	var d Decision
	for range steps {
		now = now.Add(time.Second)
		grid := pv + actual - load
		o := battery(now, 50, map[string]hearth.Point{PointPower: hearth.V(sign * actual)})
		d = e.Evaluate(Input{Now: now, Target: Target{Mode: hearth.ModeSelfConsumption}, Devices: []Observation{o},
			Grid: &GridSample{W: hearth.Watts(grid), At: now}})
		a := d.Commands[0]
		if a.Mode() != hearth.ModePower {
			return d
		}
		e.Confirm("battery", a.Power())
		actual += follow * (float64(a.Power()) - actual)
	}
	return d
}

// A battery reporting its power with the wrong sign, consistently, makes
// self_consumption swing from one limit to the other: the response moves
// away from every command, which trips implausible with the detail,
// within a few readings instead of never.
func TestDivergingLoopTripsImplausible(t *testing.T) {
	t.Parallel()
	d := selfConsumption(t, -1, 1, 30)
	if a := d.Commands[0]; a.Mode() != hearth.ModeAuto || !slices.Contains(d.Trips, hearth.RuleImplausible) ||
		!strings.Contains(d.Devices[0].Why[hearth.RuleImplausible], "the loop diverges") {
		t.Errorf("inverted battery under self_consumption: %s, trips %v, why %q; want implausible, handed back", a, d.Trips, d.Devices[0].Why[hearth.RuleImplausible])
	}
	// A battery that follows, even slowly, never does.
	for _, follow := range []float64{1, 0.5, 0.1} {
		if d := selfConsumption(t, 1, follow, 120); slices.Contains(d.Trips, hearth.RuleImplausible) {
			t.Errorf("battery following %g of each step: implausible (%q)", follow, d.Devices[0].Why[hearth.RuleImplausible])
		}
	}
}

// A meter sample older than the last change of command holds the charge
// for a reading, as a ramp does; it is no binding of import_limit_w, which
// is named only when the meter's own headroom runs out.
func TestMeterLagIsNoImportBinding(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.ImportLimitW = watts(2500)
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	eval := func(s int, target Target, gridW float64, gridAt int) Decision {
		return e.Evaluate(Input{Now: at(s), Target: target, Devices: []Observation{battery(at(s), 50, nil)},
			Grid: &GridSample{W: hearth.Watts(gridW), At: at(gridAt)}})
	}
	eval(1, Target{Mode: hearth.ModeAuto}, -300, 1)
	if d := eval(2, power(-1500), -300, 1); d.Rule != "" {
		t.Errorf("a charge lease on a meter sample from before it: rule %q, want none (the meter has not seen it yet)", d.Rule)
	}
	if d := eval(3, power(-1500), -300, 3); d.Rule != "" || d.TargetW == nil || *d.TargetW != -1500 {
		t.Errorf("the meter has seen it: rule %q target %v, want -1500 W unbound", d.Rule, d.TargetW)
	}
	if d := eval(4, power(-1500), -1800-2000, 4); d.Rule != hearth.RuleImport {
		t.Errorf("importing 3800 W with a 2500 W limit: rule %q, want %s", d.Rule, hearth.RuleImport)
	}
}

// A cloud may reverse its command every reading (a fast balancing
// service): a battery that follows swings back and forth onto each
// command, which is no divergence.
func TestFollowingAlternatingCommandsIsPlausible(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.RampWPerS = 5000
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	now, actual := t0, 0.0
	for i := range 30 {
		now = now.Add(time.Second)
		want := 300.0
		if i%2 == 1 {
			want = -300
		}
		o := battery(now, 50, map[string]hearth.Point{PointPower: hearth.V(actual)})
		d := e.Evaluate(Input{Now: now, Target: power(want), Devices: []Observation{o}})
		if slices.Contains(d.Trips, hearth.RuleImplausible) {
			t.Fatalf("reading %d: a battery following commands that alternate ±300 W is implausible: %q", i, d.Devices[0].Why[hearth.RuleImplausible])
		}
		a := d.Commands[0]
		e.Confirm("battery", a.Power())
		actual = float64(a.Power())
	}
}

// The decider runs on every tick, more often than readings arrive: a
// contradiction counts once per reading, however many ticks evaluate that
// reading. One reading whose volts and amps contradict its power, seen on
// many ticks, trips nothing; contradictions distinct such readings do.
func TestContradictionCountsReadingsNotTicks(t *testing.T) {
	t.Parallel()
	e, err := NewEvaluator(testLimits())
	if err != nil {
		t.Fatal(err)
	}
	// Charging 1500 W by its power, discharging 1500 W by V×A.
	wrong := map[string]hearth.Point{PointPower: hearth.V(-1500), PointBatteryV: hearth.V(52), PointBatteryA: hearth.V(28.8)}
	now := t0
	const ticks = 2 * contradictions // per reading, all inside max_reading_age
	for r := 1; r <= contradictions; r++ {
		o := battery(now, 50, wrong) // a new reading arrives
		var d Decision
		for range ticks {
			now = now.Add(time.Second)
			d = e.Evaluate(Input{Now: now, Target: power(1000), Devices: []Observation{o}})
		}
		tripped := slices.Contains(d.Trips, hearth.RuleImplausible)
		if r < contradictions && tripped {
			t.Fatalf("%d contradicting readings, each evaluated on %d ticks: implausible (%q), want it only after %d readings",
				r, ticks, d.Devices[0].Why[hearth.RuleImplausible], contradictions)
		}
		if r == contradictions && (!tripped || d.Commands[0].Mode() != hearth.ModeAuto ||
			!strings.Contains(d.Devices[0].Why[hearth.RuleImplausible], "battery_v × battery_a")) {
			t.Fatalf("%d contradicting readings: %s, trips %v, why %q; want implausible by V×A, handed back",
				r, d.Commands[0], d.Trips, d.Devices[0].Why[hearth.RuleImplausible])
		}
	}
}

// The response check counts readings too: a battery commanded +1000 W
// that says it charges 980 W, read every 5 s and evaluated every second,
// is held implausible only once contradictions of its readings have come
// after it had EffectiveWithin to follow.
func TestWrongResponseCountsReadingsNotTicks(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	wrong := map[string]hearth.Point{PointPower: hearth.V(-980)}
	var (
		now, commanded time.Time // commanded: the first tick with the discharge approved
		o              Observation
		late           int // readings that arrived once the device had had time to follow
	)
	for i := range 90 {
		now = t0.Add(time.Duration(i+1) * time.Second)
		if i%5 == 0 {
			o = battery(now, 50, wrong)
			if !commanded.IsZero() && now.Sub(commanded) >= DefaultEffectiveWithin {
				late++
			}
		}
		d := e.Evaluate(Input{Now: now, Target: power(1000), Devices: []Observation{o}})
		if slices.Contains(d.Trips, hearth.RuleImplausible) {
			if late < contradictions {
				t.Fatalf("implausible at %s with %d readings after the device had %s to follow (%q), want %d",
					now.Sub(t0), late, DefaultEffectiveWithin, d.Devices[0].Why[hearth.RuleImplausible], contradictions)
			}
			return
		}
		a := d.Commands[0]
		if a.Mode() == hearth.ModePower && a.Power() >= signMinW && commanded.IsZero() {
			commanded = now
		}
		e.Confirm("battery", a.Power())
	}
	t.Fatalf("commanded +1000 W for 90 s, read -980 W every 5 s: never implausible (%d late readings)", late)
}
