package safety

import (
	"math"
	"sort"
	"time"

	"github.com/hearth-energy/hearth"
)

// Target is what a lease (or the fallback) asks the site for at one
// instant. Power is the total battery power over every controllable device,
// meaningful in ModePower only.
type Target struct {
	Mode  hearth.Mode
	Power hearth.Watts
}

// Observation is the latest reading of one device and when it arrived, on
// the evaluating clock. A zero At means the device has not been read.
type Observation struct {
	Reading hearth.Reading
	At      time.Time
}

// GridSample is the site meter's grid power, positive exporting, and when it
// was read. Quality is QualityGood when W holds a value.
type GridSample struct {
	W       hearth.Watts
	Quality hearth.Quality
	At      time.Time
}

// Input is everything one evaluation looks at.
type Input struct {
	Now    time.Time
	Target Target
	EStop  bool
	// Devices are the controllable devices, by their latest observation;
	// Reading.Device names each one.
	Devices []Observation
	// Grid is the site meter, nil when none is configured.
	Grid *GridSample
}

// Decision is the outcome of one evaluation.
type Decision struct {
	// Commands holds one approved command per device of the Input, in the
	// same order.
	Commands []Approved
	// Trips lists the rules tripped on any device, sorted.
	Trips []string
	// Rule is the rule that bound the target before ramping on the first
	// device that had one, or "".
	Rule string
	// TargetW is the total power the limits allow before ramping; nil when
	// no device is held at a power (every one is in auto).
	TargetW *hearth.Watts
}

type devState struct {
	last   Approved
	lastAt time.Time
	trips  map[string]bool
}

// Evaluator turns targets and readings into approved commands. It keeps
// the little state the rules need between evaluations: the last approved
// power of each device (for the ramp) and the tripped rules (for
// hysteresis). It is not safe for concurrent use; its owner serialises
// calls. It reads no clock: time comes in with each Input.
type Evaluator struct {
	lim Limits
	dev map[string]*devState
}

// NewEvaluator returns an evaluator for lim, or lim's validation error.
func NewEvaluator(lim Limits) (*Evaluator, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	return &Evaluator{lim: lim, dev: map[string]*devState{}}, nil
}

// Limits returns the limits the evaluator enforces.
func (e *Evaluator) Limits() Limits { return e.lim }

// Evaluate decides one command per device and remembers it for the ramp
// and hysteresis of the next evaluation.
func (e *Evaluator) Evaluate(in Input) Decision {
	return e.evaluate(in, true)
}

// Preview computes what Evaluate would allow as a target, before ramping,
// without changing any state. Setpoint acks use it.
func (e *Evaluator) Preview(in Input) Decision {
	return e.evaluate(in, false)
}

func (e *Evaluator) state(name string) *devState {
	st, ok := e.dev[name]
	if !ok {
		st = &devState{trips: map[string]bool{}}
		e.dev[name] = st
	}
	return st
}

func (e *Evaluator) evaluate(in Input, commit bool) Decision {
	var d Decision
	n := len(in.Devices)
	if n == 0 {
		return d
	}
	share := in.Target.Power / hearth.Watts(n)
	mode := in.Target.Mode
	siteRule := ""
	// Self-consumption holds grid power near zero: the batteries take over
	// whatever the grid carries now.
	if mode == hearth.ModeSelfConsumption {
		sum, ok := hearth.Watts(0), e.gridFresh(in)
		for _, o := range in.Devices {
			p, good := point(o.Reading, PointPower)
			ok = ok && good
			sum += hearth.Watts(p)
		}
		if ok {
			mode, share = hearth.ModePower, (sum-in.Grid.W)/hearth.Watts(n)
		} else {
			mode, siteRule = hearth.ModeAuto, RuleMeter
		}
	}
	if mode == hearth.ModeIdle {
		mode, share = hearth.ModePower, 0
	}
	var total hearth.Watts
	held := false
	trips := map[string]bool{}
	for _, o := range in.Devices {
		name := o.Reading.Device
		st := *e.state(name)
		st.trips = cloneTrips(st.trips)
		a, target, rule := e.decide(in, o, &st, mode, share, n)
		if rule == "" && siteRule != "" && a.mode == hearth.ModeAuto {
			rule = siteRule
		}
		if d.Rule == "" {
			d.Rule = rule
		}
		if a.mode == hearth.ModePower {
			held = true
			total += target
		}
		for r, on := range st.trips {
			if on {
				trips[r] = true
			}
		}
		if commit {
			st.last, st.lastAt = a, in.Now
			*e.dev[name] = st
		}
		d.Commands = append(d.Commands, a)
	}
	for r := range trips {
		d.Trips = append(d.Trips, r)
	}
	sort.Strings(d.Trips)
	if held {
		d.TargetW = &total
	}
	return d
}

// decide returns the approved command for one device, the power the limits
// allow before ramping, and the rule that bound that target.
func (e *Evaluator) decide(in Input, o Observation, st *devState, mode hearth.Mode, share hearth.Watts, n int) (Approved, hearth.Watts, string) {
	l := e.lim
	name := o.Reading.Device
	auto := func(rule string) (Approved, hearth.Watts, string) {
		return Approved{device: name, mode: hearth.ModeAuto, rule: rule}, 0, rule
	}
	hold := func(p hearth.Watts, rule string) (Approved, hearth.Watts, string) {
		return Approved{device: name, mode: hearth.ModePower, power: p, rule: rule}, p, rule
	}
	setTrip := func(rule string, on bool) {
		switch {
		case rule == "":
		case on:
			st.trips[rule] = true
		default:
			delete(st.trips, rule)
		}
	}

	setTrip(RuleEStop, in.EStop)
	if in.EStop {
		return hold(0, RuleEStop)
	}
	stale := o.At.IsZero() || in.Now.Sub(o.At) > l.MaxReadingAge
	setTrip(RuleStale, stale)
	if stale {
		return auto(RuleStale)
	}
	// Points that are absent or not implemented leave their rule unchecked;
	// a point the device should have but could not give forces the safe
	// state, since a rule cannot be checked against it.
	soc, socOK := point(o.Reading, PointSoC)
	badQuality := !socOK
	window := func(pt string, lo, hi, hyst float64, ruleLo, ruleHi string) {
		p, ok := o.Reading.Points[pt]
		if !ok || p.Quality == hearth.QualityNotImplemented {
			setTrip(ruleLo, false)
			setTrip(ruleHi, false)
			return
		}
		if !p.Good() || math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
			badQuality = true
			return
		}
		v := p.Value
		setTrip(ruleLo, v < lo || st.trips[ruleLo] && v < lo+hyst)
		setTrip(ruleHi, v > hi || st.trips[ruleHi] && v > hi-hyst)
	}
	window(PointCellVMin, l.CellVMin, math.Inf(1), l.CellVHysteresis, RuleCellVMin, "")
	window(PointCellVMax, math.Inf(-1), l.CellVMax, l.CellVHysteresis, "", RuleCellVMax)
	window(PointTemp, l.TempCMin, l.TempCMax, l.TempHysteresisC, RuleTempMin, RuleTempMax)
	if socOK {
		setTrip(RuleSoCMin, soc <= l.SoCMinPct || st.trips[RuleSoCMin] && soc < l.SoCMinPct+l.SoCHysteresisPct)
		setTrip(RuleSoCMax, soc >= l.SoCMaxPct || st.trips[RuleSoCMax] && soc > l.SoCMaxPct-l.SoCHysteresisPct)
	}
	setTrip(RuleReadingQuality, badQuality)
	if badQuality {
		return auto(RuleReadingQuality)
	}
	for _, r := range []string{RuleCellVMin, RuleCellVMax, RuleTempMin, RuleTempMax} {
		if st.trips[r] {
			return hold(0, r)
		}
	}
	if mode == hearth.ModeAuto {
		// Handing back to the device leaves SoC to the device's own
		// reserve logic; the agent commands nothing.
		return auto("")
	}

	p, rule := share, ""
	bind := func(v hearth.Watts, r string) {
		if v != p {
			p = v
			if rule == "" {
				rule = r
			}
		}
	}
	if math.IsNaN(float64(p)) || math.IsInf(float64(p), 0) {
		bind(0, RuleMaxDischarge)
	}
	bind(min(p, l.MaxDischargeW), RuleMaxDischarge)
	bind(max(p, -l.MaxChargeW), RuleMaxCharge)
	if st.trips[RuleSoCMin] {
		bind(min(p, 0), RuleSoCMin)
	}
	if st.trips[RuleSoCMax] {
		bind(max(p, 0), RuleSoCMax)
	}
	if l.ExportLimitW != nil && p > 0 {
		bind(min(p, max(e.exportBound(in, o, n), 0)), RuleExport)
	}
	target := p

	// Ramp: moves away from zero are limited to RampWPerS; moves towards
	// zero are immediate, since that is always the safe direction.
	last := hearth.Watts(0)
	dt := 0.0
	if st.last.mode == hearth.ModePower {
		last = st.last.power
		dt = max(in.Now.Sub(st.lastAt).Seconds(), 0)
	} else if measured, ok := point(o.Reading, PointPower); ok {
		// Taking over from the device's own logic: ramp from what the
		// battery does now, not from 0, so the takeover causes no dip.
		// The window always spans 0, so the result stays between 0 and
		// the limited target whatever the measurement says.
		last = hearth.Watts(measured)
	}
	step := hearth.Watts(l.RampWPerS * dt)
	lo, hi := min(last, 0)-step, max(last, 0)+step
	a := Approved{device: name, mode: hearth.ModePower, power: clampW(p, lo, hi), rule: rule}
	if a.power != p {
		a.rule = RuleRamp
	}
	return a, target, rule
}

// exportBound is the most this device may discharge with site export at
// the limit: from the meter when it is fresh, else from the inverter's own
// AC output (an upper bound on export, since the house load is not known),
// else nothing.
func (e *Evaluator) exportBound(in Input, o Observation, n int) hearth.Watts {
	lim := *e.lim.ExportLimitW / hearth.Watts(n)
	batt, battOK := point(o.Reading, PointPower)
	if e.gridFresh(in) && battOK {
		return hearth.Watts(batt) + (*e.lim.ExportLimitW-in.Grid.W)/hearth.Watts(n)
	}
	if ac, ok := point(o.Reading, PointACPower); ok && battOK {
		pv := hearth.Watts(ac - batt)
		return lim - max(pv, 0)
	}
	return 0
}

func (e *Evaluator) gridFresh(in Input) bool {
	g := in.Grid
	return g != nil && g.Quality == hearth.QualityGood && !g.At.IsZero() &&
		in.Now.Sub(g.At) <= e.lim.MaxReadingAge &&
		!math.IsNaN(float64(g.W)) && !math.IsInf(float64(g.W), 0)
}

// point returns a good, finite value of a reading's point.
func point(r hearth.Reading, name string) (float64, bool) {
	p, ok := r.Points[name]
	if !ok || !p.Good() || math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		return 0, false
	}
	return p.Value, true
}

func clampW(v, lo, hi hearth.Watts) hearth.Watts { return max(lo, min(hi, v)) }

func cloneTrips(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Tripped reports whether rule is tripped on the device.
func (e *Evaluator) Tripped(device, rule string) bool {
	st, ok := e.dev[device]
	return ok && st.trips[rule]
}

// Last returns the last command approved for a device by Evaluate.
func (e *Evaluator) Last(device string) (Approved, bool) {
	st, ok := e.dev[device]
	if !ok || !st.last.Valid() {
		return Approved{}, false
	}
	return st.last, true
}
