package safety

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
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
// point without a value.
func maybePoint(s script, lo, hi float64) hearth.Point {
	switch s.intn(12) {
	case 0:
		return hearth.Q(hearth.QualityCommError)
	case 1:
		return hearth.Q(hearth.QualityNotImplemented)
	case 2:
		return hearth.V(math.NaN())
	}
	return hearth.V(s.float(lo, hi))
}

// runProperty drives an evaluator through steps random steps of readings,
// targets (leases and fallbacks), e-stops and clock steps, and checks every
// approved command against every limit.
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
	prev := Approved{}
	var prevAt time.Time
	for i := 0; i < steps && more(); i++ {
		switch s.intn(5) {
		case 0: // the clock moves, sometimes backwards (a wall-clock step)
			now = now.Add(time.Duration(s.float(-2, 30) * float64(time.Second)))
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
			if s.intn(3) == 0 {
				obs.At = now.Add(-time.Duration(s.float(0, 40) * float64(time.Second)))
			}
			if s.intn(2) == 0 {
				grid = &GridSample{W: hearth.Watts(s.float(-8000, 8000)), At: now}
			} else {
				grid = nil
			}
		}
		estop := s.intn(20) == 0
		in := Input{Now: now, Target: target, EStop: estop, Devices: []Observation{obs}, Grid: grid}
		a := e.Evaluate(in).Commands[0]
		checkInvariants(t, lim, in, prev, prevAt, a)
		if t.Failed() {
			t.Fatalf("step %d: input %+v", i, in)
		}
		prev, prevAt = a, now
	}
}

func checkInvariants(t *testing.T, lim Limits, in Input, prev Approved, prevAt time.Time, a Approved) {
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
	// Ramp: away from zero at most RampWPerS since the previous command;
	// taking over from the device's own logic, from what the battery was
	// measured doing (0 when that is unknown).
	last, dt := hearth.Watts(0), 0.0
	if prev.Mode() == hearth.ModePower {
		last, dt = prev.Power(), max(in.Now.Sub(prevAt).Seconds(), 0)
	} else if m, ok := in.Devices[0].Reading.Points[PointPower]; ok && m.Good() {
		last = hearth.Watts(m.Value)
	}
	step := hearth.Watts(lim.RampWPerS*dt) + 1e-6
	if p > max(last, 0)+step || p < min(last, 0)-step {
		t.Errorf("power %v from %v after %.3f s breaks the ramp of %v W/s", p, last, dt, lim.RampWPerS)
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
	if a.Mode() == hearth.ModeAuto {
		return // the safe state satisfies every rule below
	}
	if v, ok := point(o.Reading, PointSoC); !ok {
		t.Errorf("soc unreadable: got %s, want auto", a)
	} else {
		if v <= lim.SoCMinPct && p > 0 {
			t.Errorf("soc %.2f at or below %v: discharging %v", v, lim.SoCMinPct, p)
		}
		if v >= lim.SoCMaxPct && p < 0 {
			t.Errorf("soc %.2f at or above %v: charging %v", v, lim.SoCMaxPct, p)
		}
	}
	out := func(name string, lo, hi float64) bool {
		v, ok := point(o.Reading, name)
		return ok && (v < lo || v > hi)
	}
	if (out(PointCellVMin, lim.CellVMin, math.Inf(1)) || out(PointCellVMax, math.Inf(-1), lim.CellVMax) ||
		out(PointTemp, lim.TempCMin, lim.TempCMax)) && p != 0 {
		t.Errorf("cell voltage or temperature out of window: got %v W, want 0", p)
	}
	if lim.ExportLimitW != nil && p > 0 {
		batt, bok := point(o.Reading, PointPower)
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
