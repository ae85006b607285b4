package safety

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// script is a source of choices for a random run: bytes from the fuzzer,
// or a seeded generator.
type script interface {
	intn(n int) int
	float(lo, hi float64) float64
}

type rngScript struct{ r *rand.Rand }

func (s rngScript) intn(n int) int               { return s.r.IntN(n) }
func (s rngScript) float(lo, hi float64) float64 { return lo + s.r.Float64()*(hi-lo) }

type byteScript struct{ b []byte }

func (s *byteScript) next() uint16 {
	if len(s.b) < 2 {
		return 0
	}
	v := binary.LittleEndian.Uint16(s.b)
	s.b = s.b[2:]
	return v
}
func (s *byteScript) intn(n int) int { return int(s.next()) % n }
func (s *byteScript) float(lo, hi float64) float64 {
	return lo + float64(s.next())/65535*(hi-lo)
}
func (s *byteScript) done() bool { return len(s.b) < 2 }

// maybePoint returns a value drawn around a window, or occasionally a
// point without a value, or a value no device could give (a sentinel read
// as a number, a wrong scale factor).
func maybePoint(s script, lo, hi float64) hearth.Point {
	switch s.intn(16) {
	case 0:
		return hearth.Q(hearth.QualityCommError)
	case 1:
		return hearth.Q(hearth.QualityNotImplemented)
	case 2:
		return hearth.V(math.NaN())
	case 3:
		return hearth.Q(hearth.QualityOutOfRange)
	case 4:
		return hearth.V([]float64{32767, -32768, 65535, 250, -30, 1e9}[s.intn(6)])
	}
	return hearth.V(s.float(lo, hi))
}

// model is the checker's own account of what the rules must have tripped,
// kept from the readings alone, to check hysteresis and unknown values.
type model struct {
	seen    map[string]bool
	tripped map[hearth.Rule]bool
}

// observe updates the model with a reading, and returns the rules the
// evaluator must hold the device for.
func (m *model) observe(lim Limits, r hearth.Reading) {
	val := func(name string) (float64, bool) {
		p, has := r.Points[name]
		v, ok := p.Value, has && p.Good() && !math.IsNaN(p.Value) && !math.IsInf(p.Value, 0)
		if rg, has := hearth.PhysicalRange(name, 0); ok && has && !rg.Contains(v) {
			ok = false
		}
		if ok {
			m.seen[name] = true
		}
		return v, ok
	}
	win := func(name string, lo, hi, hyst float64, ruleLo, ruleHi hearth.Rule) {
		v, ok := val(name)
		p, has := r.Points[name]
		switch {
		case ok:
			m.tripped[ruleLo] = v < lo || m.tripped[ruleLo] && v < lo+hyst
			m.tripped[ruleHi] = v > hi || m.tripped[ruleHi] && v > hi-hyst
		case m.seen[name] || has && p.Quality != hearth.QualityNotImplemented:
			m.tripped[ruleLo], m.tripped[ruleHi] = true, true
		default:
			m.tripped[ruleLo], m.tripped[ruleHi] = false, false
		}
	}
	inf := math.Inf(1)
	win(PointCellVMin, lim.CellVMin, inf, lim.CellVHysteresis, hearth.RuleCellVMin, "")
	win(PointCellVMax, -inf, lim.CellVMax, lim.CellVHysteresis, "", hearth.RuleCellVMax)
	win(PointTemp, lim.TempCMin, lim.TempCMax, lim.TempHysteresisC, hearth.RuleTempMin, hearth.RuleTempMax)
	delete(m.tripped, "")
	if v, ok := val(PointSoC); ok {
		m.tripped[hearth.RuleSoCMin] = v <= lim.SoCMinPct || m.tripped[hearth.RuleSoCMin] && v < lim.SoCMinPct+lim.SoCHysteresisPct
		m.tripped[hearth.RuleSoCMax] = v >= lim.SoCMaxPct || m.tripped[hearth.RuleSoCMax] && v > lim.SoCMaxPct-lim.SoCHysteresisPct
	} else if m.seen[PointSoC] {
		m.tripped[hearth.RuleSoCMin], m.tripped[hearth.RuleSoCMax] = true, true
	}
}

// runProperty drives an evaluator through steps random steps of readings
// (hostile ones among them), targets (leases and fallbacks), e-stops,
// clock steps, stale meters and writes that fail or hold less than
// approved, and checks every approved command against every limit.
func runProperty(t *testing.T, s script, steps int, more func() bool) {
	lim := testLimits()
	if s.intn(2) == 0 {
		lim.ExportLimitW = watts(s.float(0, 4000))
	}
	lim.RampWPerS = s.float(1, 3000)
	lim.MaxReadingAge = time.Duration(s.float(1, 20) * float64(time.Second))
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	obs := Observation{Reading: hearth.Reading{Device: "battery"}} // not read yet
	var grid *GridSample
	target := power(0)
	m := &model{seen: map[string]bool{}, tripped: map[hearth.Rule]bool{}}
	base, baseOK := hearth.Watts(0), false // what the device holds, as the ramp's base
	var baseAt time.Time
	for i := 0; i < steps && more(); i++ {
		switch s.intn(5) {
		case 0: // time passes (the evaluator's clock is monotonic)
			now = now.Add(time.Duration(s.float(0, 30) * float64(time.Second)))
		case 1: // a new lease or schedule slot
			switch s.intn(5) {
			case 0:
				target = Target{Mode: hearth.ModeAuto}
			case 1:
				target = Target{Mode: hearth.ModeIdle}
			case 2:
				target = Target{Mode: hearth.ModeSelfConsumption}
			default:
				target = power(s.float(-20000, 20000))
			}
		default: // a reading
			now = now.Add(time.Duration(s.float(0, 3) * float64(time.Second)))
			obs = Observation{At: now, Reading: hearth.Reading{Device: "battery", Points: map[string]hearth.Point{
				PointSoC:      maybePoint(s, -5, 105),
				PointPower:    maybePoint(s, -5000, 5000),
				PointACPower:  maybePoint(s, -5000, 10000),
				PointCellVMin: maybePoint(s, 2.5, 3.8),
				PointCellVMax: maybePoint(s, 2.5, 3.8),
				PointTemp:     maybePoint(s, -20, 70),
			}}}
			if s.intn(4) == 0 { // a device that reports power with the wrong sign
				obs.Reading.Points[PointBatteryV] = hearth.V(52)
				obs.Reading.Points[PointBatteryA] = hearth.V(-obs.Reading.Points[PointPower].Value / 52)
			}
			if s.intn(3) == 0 {
				obs.At = now.Add(-time.Duration(s.float(0, 40) * float64(time.Second)))
			}
			switch s.intn(3) {
			case 0:
				grid = &GridSample{W: hearth.Watts(s.float(-8000, 8000)), At: now}
			case 1: // the meter lags: a sample up to max_reading_age old
				if grid != nil {
					grid.At = now.Add(-time.Duration(s.float(0, 1) * float64(lim.MaxReadingAge)))
				}
			default:
				grid = nil
			}
			if now.Sub(obs.At) <= lim.MaxReadingAge {
				m.observe(lim, obs.Reading)
			}
		}
		estop := s.intn(20) == 0
		in := Input{Now: now, Target: target, EStop: estop, Devices: []Observation{obs}, Grid: grid}
		d := e.Evaluate(in)
		a := d.Commands[0]
		checkInvariants(t, lim, in, m, base, baseOK, baseAt, a, d)
		if t.Failed() {
			t.Fatalf("step %d: input %+v", i, in)
		}
		// The write: it fails, or holds less than approved (a rate cut
		// towards zero), or holds it.
		switch {
		case a.Mode() != hearth.ModePower:
			baseOK = false
		case s.intn(6) == 0:
			e.Unconfirmed("battery")
			baseOK = false
		case s.intn(6) == 0:
			held := a.Power() * hearth.Watts(s.float(0.5, 1))
			e.Confirm("battery", held)
			base, baseOK, baseAt = held, true, now
		default:
			base, baseOK, baseAt = a.Power(), true, now
		}
	}
}

func checkInvariants(t *testing.T, lim Limits, in Input, m *model, base hearth.Watts, baseOK bool, baseAt time.Time, a Approved, d Decision) {
	t.Helper()
	if !a.Valid() || a.Device() != "battery" {
		t.Fatalf("approved %+v is not a valid command for the battery", a)
	}
	p := a.Power()
	if a.Mode() == hearth.ModeAuto && p != 0 {
		t.Errorf("auto with power %v", p)
	}
	if p > lim.MaxDischargeW || p < -lim.MaxChargeW || math.IsNaN(float64(p)) {
		t.Errorf("power %v outside -%v..%v", p, lim.MaxChargeW, lim.MaxDischargeW)
	}
	// Ramp: away from zero at most RampWPerS from what the device holds
	// (after a failed write, what it is measured doing; 0 when unknown).
	last, dt := hearth.Watts(0), 0.0
	if baseOK {
		last, dt = base, max(in.Now.Sub(baseAt).Seconds(), 0)
	} else if v, ok := point(in.Devices[0].Reading, hearth.PointPower); ok && math.Abs(v) <= 1e6 {
		last = hearth.Watts(v)
	}
	step := hearth.Watts(lim.RampWPerS*dt) + 1e-6
	if p > max(last, 0)+step || p < min(last, 0)-step {
		t.Errorf("power %v from %v (held %v) after %.3f s breaks the ramp of %v W/s", p, last, baseOK, dt, lim.RampWPerS)
	}
	if in.EStop {
		if a.Mode() != hearth.ModePower || p != 0 {
			t.Errorf("e-stop engaged: got %s, want 0 W", a)
		}
		return
	}
	o := in.Devices[0]
	if in.Now.Sub(o.At) > lim.MaxReadingAge {
		if a.Mode() != hearth.ModeAuto {
			t.Errorf("reading %s old: got %s, want the safe state (auto)", in.Now.Sub(o.At), a)
		}
		return
	}
	if slices.Contains(d.Trips, hearth.RuleImplausible) && a.Mode() != hearth.ModeAuto {
		t.Errorf("an implausible device got %s, want the safe state", a)
	}
	if a.Mode() == hearth.ModeAuto {
		return // the device's own logic; the rules below bind commands
	}
	if !m.seen[PointSoC] {
		t.Errorf("soc never read: got %s, want auto", a)
	}
	if m.tripped[hearth.RuleSoCMin] && p > 0 {
		t.Errorf("soc at or below %v, or unknown: discharging %v", lim.SoCMinPct, p)
	}
	if m.tripped[hearth.RuleSoCMax] && p < 0 {
		t.Errorf("soc at or above %v, or unknown: charging %v", lim.SoCMaxPct, p)
	}
	for _, r := range []hearth.Rule{hearth.RuleCellVMin, hearth.RuleCellVMax, hearth.RuleTempMin, hearth.RuleTempMax} {
		if m.tripped[r] && p != 0 {
			t.Errorf("%s tripped (out of window, unknown, or not yet back inside by the hysteresis): got %v W, want 0", r, p)
		}
	}
	if lim.ExportLimitW != nil && p > 0 {
		batt, bok := point(o.Reading, hearth.PointPower)
		g := in.Grid
		if g != nil && bok && in.Now.Sub(g.At) <= lim.MaxReadingAge {
			if bound := hearth.Watts(batt) + *lim.ExportLimitW - g.W; p > max(bound, 0)+1e-6 {
				t.Errorf("export: battery %v, grid %v, limit %v: discharge %v breaks it", batt, g.W, *lim.ExportLimitW, p)
			}
		}
	}
}
func TestPropertyRandomSequences(t *testing.T) {
	t.Parallel()
	runs := 300
	if testing.Short() {
		runs = 30
	}
	for seed := range runs {
		s := rngScript{rand.New(rand.NewPCG(uint64(seed), 7))}
		runProperty(t, s, 400, func() bool { return true })
	}
}

func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 2, 0, 3, 0, 200, 10, 7, 7, 7, 7, 40, 40, 1, 9})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &byteScript{b: b}
		runProperty(t, s, 2000, func() bool { return !s.done() })
	})
}
