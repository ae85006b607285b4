package safety

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func testLimits() Limits {
	return Limits{
		SoCMinPct: 10, SoCMaxPct: 95, SoCHysteresisPct: 2,
		MaxChargeW: 2500, MaxDischargeW: 2500,
		RampWPerS: 1000, MaxReadingAge: 10 * time.Second,
		CellVMin: 2.8, CellVMax: 3.65, CellVHysteresis: 0.05,
		TempCMin: 0, TempCMax: 50, TempHysteresisC: 2,
		MaxLease: 24 * time.Hour, ClockSkew: 30 * time.Second,
		Fallback: hearth.ModeAuto,
	}
}

func watts(w float64) *hearth.Watts { x := hearth.Watts(w); return &x }

// battery returns a fresh, healthy reading with the given overrides.
func battery(at time.Time, soc float64, over map[string]hearth.Point) Observation {
	r := hearth.Reading{Device: "battery", Time: at, Points: map[string]hearth.Point{
		PointSoC: hearth.V(soc), PointPower: hearth.V(0), PointCellVMin: hearth.V(3.2),
		PointCellVMax: hearth.V(3.3), PointTemp: hearth.V(25),
	}}
	for k, v := range over {
		r.Points[k] = v
	}
	return Observation{Reading: r, At: at}
}

func power(w float64) Target { return Target{Mode: hearth.ModePower, Power: hearth.Watts(w)} }

// settle evaluates the same input until the ramp has caught up.
func settle(e *Evaluator, in Input) Decision {
	var d Decision
	for i := 0; i < 20; i++ {
		in.Now = in.Now.Add(time.Second)
		for j := range in.Devices {
			in.Devices[j].At = in.Now
		}
		d = e.Evaluate(in)
	}
	return d
}

func TestEvaluateRules(t *testing.T) {
	t.Parallel()
	export := testLimits()
	export.ExportLimitW = watts(1000)
	cases := []struct {
		name     string
		lim      Limits
		target   Target
		soc      float64
		over     map[string]hearth.Point
		grid     *GridSample
		estop    bool
		wantMode hearth.Mode
		wantW    hearth.Watts
		wantRule hearth.Rule
	}{
		{"within limits", testLimits(), power(1500), 50, nil, nil, false, hearth.ModePower, 1500, ""},
		{"discharge clamped", testLimits(), power(5000), 50, nil, nil, false, hearth.ModePower, 2500, hearth.RuleMaxDischarge},
		{"charge clamped", testLimits(), power(-9000), 50, nil, nil, false, hearth.ModePower, -2500, hearth.RuleMaxCharge},
		{"no discharge at soc min", testLimits(), power(2000), 10, nil, nil, false, hearth.ModePower, 0, hearth.RuleSoCMin},
		{"charge allowed at soc min", testLimits(), power(-2000), 10, nil, nil, false, hearth.ModePower, -2000, ""},
		{"no charge at soc max", testLimits(), power(-2000), 95, nil, nil, false, hearth.ModePower, 0, hearth.RuleSoCMax},
		{"cell over voltage", testLimits(), power(-2000), 50, map[string]hearth.Point{PointCellVMax: hearth.V(3.7)}, nil, false, hearth.ModePower, 0, hearth.RuleCellVMax},
		{"cell under voltage", testLimits(), power(2000), 50, map[string]hearth.Point{PointCellVMin: hearth.V(2.7)}, nil, false, hearth.ModePower, 0, hearth.RuleCellVMin},
		{"too hot", testLimits(), power(2000), 50, map[string]hearth.Point{PointTemp: hearth.V(55)}, nil, false, hearth.ModePower, 0, hearth.RuleTempMax},
		{"too cold", testLimits(), power(-2000), 50, map[string]hearth.Point{PointTemp: hearth.V(-5)}, nil, false, hearth.ModePower, 0, hearth.RuleTempMin},
		{"temperature not implemented", testLimits(), power(1000), 50, map[string]hearth.Point{PointTemp: hearth.Q(hearth.QualityNotImplemented)}, nil, false, hearth.ModePower, 1000, ""},
		{"temperature never read", testLimits(), power(1000), 50, map[string]hearth.Point{PointTemp: hearth.Q(hearth.QualityCommError)}, nil, false, hearth.ModePower, 1000, ""},
		{"temperature out of range", testLimits(), power(1000), 50, map[string]hearth.Point{PointTemp: hearth.Q(hearth.QualityOutOfRange)}, nil, false, hearth.ModePower, 0, hearth.RuleReadingQuality},
		{"soc 250 %", testLimits(), power(1500), 250, nil, nil, false, hearth.ModeAuto, 0, hearth.RuleReadingQuality},
		{"soc -30 %", testLimits(), power(-1500), -30, nil, nil, false, hearth.ModeAuto, 0, hearth.RuleReadingQuality},
		{"soc unreadable", testLimits(), power(1000), 50, map[string]hearth.Point{PointSoC: hearth.Q(hearth.QualityCommError)}, nil, false, hearth.ModeAuto, 0, hearth.RuleReadingQuality},
		{"idle", testLimits(), Target{Mode: hearth.ModeIdle}, 50, nil, nil, false, hearth.ModePower, 0, ""},
		{"auto", testLimits(), Target{Mode: hearth.ModeAuto}, 50, nil, nil, false, hearth.ModeAuto, 0, ""},
		{"estop", testLimits(), power(1000), 50, nil, nil, true, hearth.ModePower, 0, hearth.RuleEStop},
		{"export limit by meter", export, power(2500), 50, nil, &GridSample{W: 800}, false, hearth.ModePower, 200, hearth.RuleExport},
		{"export limit by inverter output", export, power(2500), 50, map[string]hearth.Point{PointACPower: hearth.V(600)}, nil, false, hearth.ModePower, 400, hearth.RuleExport},
		{"export limit, nothing known", export, power(2500), 50, nil, nil, false, hearth.ModePower, 0, hearth.RuleExport},
		{"self consumption", testLimits(), Target{Mode: hearth.ModeSelfConsumption}, 50, nil, &GridSample{W: -1200}, false, hearth.ModePower, 1200, ""},
		{"self consumption, no meter reading", testLimits(), Target{Mode: hearth.ModeSelfConsumption}, 50, nil, &GridSample{Quality: hearth.QualityCommError}, false, hearth.ModeAuto, 0, hearth.RuleMeter},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := NewEvaluator(c.lim)
			if err != nil {
				t.Fatal(err)
			}
			in := Input{Now: t0, Target: c.target, EStop: c.estop, Devices: []Observation{battery(t0, c.soc, c.over)}, Grid: c.grid}
			if c.grid != nil {
				c.grid.At = t0.Add(30 * time.Second)
			}
			d := settle(e, in)
			got := d.Commands[0]
			if got.Mode() != c.wantMode || got.Power() != c.wantW {
				t.Errorf("got %s %v W, want %s %v W", got.Mode(), got.Power(), c.wantMode, c.wantW)
			}
			if d.Rule != c.wantRule {
				t.Errorf("rule %q, want %q", d.Rule, c.wantRule)
			}
		})
	}
}

func TestStaleReadingHandsBack(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	obs := battery(t0, 50, nil)
	d := e.Evaluate(Input{Now: t0.Add(11 * time.Second), Target: power(1000), Devices: []Observation{obs}})
	if c := d.Commands[0]; c.Mode() != hearth.ModeAuto || c.Rule() != hearth.RuleStale {
		t.Errorf("11 s old reading: got %s rule %q, want auto by %s", c, c.Rule(), hearth.RuleStale)
	}
	d = e.Evaluate(Input{Now: t0, Target: power(1000), Devices: []Observation{{Reading: obs.Reading}}})
	if c := d.Commands[0]; c.Mode() != hearth.ModeAuto {
		t.Errorf("never read: got %s, want auto", c)
	}
}

func TestRamp(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	in := Input{Now: t0, Target: power(2500), Devices: []Observation{battery(t0, 50, nil)}}
	var got []hearth.Watts
	for i := 0; i < 5; i++ {
		d := e.Evaluate(in)
		got = append(got, d.Commands[0].Power())
		in.Now = in.Now.Add(500 * time.Millisecond)
		in.Devices[0].At = in.Now
	}
	want := []hearth.Watts{0, 500, 1000, 1500, 2000}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ramp from 0 to 2500 W at 1000 W/s every 0.5 s: got %v, want %v", got, want)
		}
	}
	// Towards zero is immediate, and through zero counts from zero.
	in.Target = power(-2500)
	d := e.Evaluate(in)
	if p := d.Commands[0].Power(); p != -500 || d.Commands[0].Rule() != hearth.RuleRamp {
		t.Errorf("reversal after 0.5 s: got %v W rule %q, want -500 W bound by ramp", p, d.Commands[0].Rule())
	}
}

func TestSoCHysteresis(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	now := t0
	step := func(soc float64) hearth.Watts {
		now = now.Add(10 * time.Second)
		return e.Evaluate(Input{Now: now, Target: power(1000), Devices: []Observation{battery(now, soc, nil)}}).Commands[0].Power()
	}
	step(50) // the first command starts the ramp from 0 W
	for _, c := range []struct {
		soc  float64
		want hearth.Watts
	}{{15, 1000}, {10, 0}, {11, 0}, {11.9, 0}, {12, 1000}, {11, 1000}, {9.9, 0}} {
		if got := step(c.soc); got != c.want {
			t.Errorf("soc %g: got %v W, want %v W", c.soc, got, c.want)
		}
	}
}

func TestPreviewChangesNothing(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	in := Input{Now: t0, Target: power(5000), Devices: []Observation{battery(t0, 50, nil)}}
	p := e.Preview(in)
	if p.TargetW == nil || *p.TargetW != 2500 || p.Rule != hearth.RuleMaxDischarge {
		t.Fatalf("preview of 5000 W: target %v rule %q, want 2500 W by %s", p.TargetW, p.Rule, hearth.RuleMaxDischarge)
	}
	if _, ok := e.Last("battery"); ok {
		t.Error("Preview recorded a command")
	}
}

func TestTwoDevicesShareTheTarget(t *testing.T) {
	t.Parallel()
	e, _ := NewEvaluator(testLimits())
	b2 := battery(t0, 50, nil)
	b2.Reading.Device = "battery2"
	in := Input{Now: t0, Target: power(3000), Devices: []Observation{battery(t0, 50, nil), b2}}
	d := settle(e, in)
	if len(d.Commands) != 2 || d.Commands[0].Power() != 1500 || d.Commands[1].Power() != 1500 {
		t.Fatalf("got %v, want 1500 W each", d.Commands)
	}
}

func TestZeroApprovedIsInvalid(t *testing.T) {
	t.Parallel()
	if (Approved{}).Valid() {
		t.Error("the zero Approved reports valid")
	}
}

// BenchmarkEvaluate is the in-process part of the reaction time: one
// evaluation of a lease against a fresh reading.
func BenchmarkEvaluate(b *testing.B) {
	e, _ := NewEvaluator(testLimits())
	in := Input{Now: t0, Target: power(2000), Devices: []Observation{battery(t0, 50, nil)}}
	for b.Loop() {
		in.Now = in.Now.Add(100 * time.Millisecond)
		in.Devices[0].At = in.Now
		e.Evaluate(in)
	}
}
