package safety

import (
	"maps"
	"math"
	"slices"
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
	// MayHold is the power the device may still be holding: the last
	// command it read back, while that command's revert timer has not
	// lapsed; nil when it holds none. A device that cannot be read counts
	// at it in the site's total, and the others' shares make room for it.
	MayHold *hearth.Watts
}

// GridSample is the site meter's grid power, positive exporting, and when it
// was read. Quality is QualityGood when W holds a value.
type GridSample struct {
	W       hearth.Watts
	Quality hearth.Quality
	At      time.Time
}

// Input is everything one evaluation looks at. Times are on the
// evaluating clock, of which only differences count: the caller passes a
// monotonic timeline, so a step of the wall clock moves nothing here.
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
	Trips []hearth.Rule
	// Rule is the rule that bound the site's target before ramping, or "";
	// RuleDevice the device it bound when it is a device's own rule (""
	// for a rule of the whole site).
	Rule       hearth.Rule
	RuleDevice string
	// TargetW is the total power the limits allow before ramping; nil when
	// no device is held at a power (every one is in auto).
	TargetW *hearth.Watts
	// Devices is each device's own safety, in the Input's order.
	Devices []DeviceSafety
	// SiteTrips are the rules tripped for the whole site rather than one
	// device (the e-stop, self_consumption without its meter), sorted.
	SiteTrips []hearth.Rule
}

// DeviceSafety is what the rules make of one device.
type DeviceSafety struct {
	Device string
	// Trips are the rules tripped on this device, sorted; Why explains
	// some of them.
	Trips []hearth.Rule
	Why   map[hearth.Rule]string
	// Held is the rule that holds the device in its safe state, out of
	// the site's shares ("" while it takes its share).
	Held hearth.Rule
	// Down says the device cannot be read at all: its rules keep the
	// state they had, and it holds device_down until it answers again.
	Down bool
}

// Evaluator turns targets and readings into approved commands. It keeps
// the little state the rules need between evaluations: the last approved
// power of each device (for the ramp), the tripped rules (for hysteresis),
// the points each device has given (so a value that goes missing is
// unknown, not unchecked), and what each device has contradicted. It is
// not safe for concurrent use; its owner serialises calls. It reads no
// clock: time comes in with each Input.
type Evaluator struct {
	lim Limits
	st  *evalState
}

// evalState is what one evaluation hands the next.
type evalState struct {
	dev map[string]*devState
	// site state: the last total commanded, when it changed, and whether
	// the export limit holds the site while the lease says auto.
	lastTotal   hearth.Watts
	totalAt     time.Time
	autoCap     bool
	capClearFor time.Time // since when export has been back under the limit
}

// NewEvaluator returns an evaluator for lim, or lim's validation error.
func NewEvaluator(lim Limits) (*Evaluator, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	if lim.EffectiveWithin <= 0 {
		lim.EffectiveWithin = DefaultEffectiveWithin
	}
	return &Evaluator{lim: lim, st: &evalState{dev: map[string]*devState{}}}, nil
}

// Limits returns the limits the evaluator enforces.
func (e *Evaluator) Limits() Limits { return e.lim }

// Evaluate decides one command per device and remembers it for the ramp
// and hysteresis of the next evaluation.
func (e *Evaluator) Evaluate(in Input) Decision {
	d, next := decide(e.lim, e.st, in)
	e.st = next
	return d
}

// Preview computes what Evaluate would allow as a target, before ramping,
// without changing any state. Setpoint acks use it.
func (e *Evaluator) Preview(in Input) Decision {
	d, _ := decide(e.lim, e.st, in)
	return d
}

// Confirm tells the evaluator what a device holds after a write was read
// back: the ramp goes on from there. held is the power its registers
// represent, which may be less than approved (a rate truncated or
// saturated by the register).
func (e *Evaluator) Confirm(device string, held hearth.Watts) {
	st := e.st.device(device)
	if st.last.mode == hearth.ModePower && !math.IsNaN(float64(held)) {
		st.last.power = held
	}
}

// Unconfirmed tells the evaluator that a write to the device failed: it
// holds whatever it held before, not what was approved, so the next ramp
// starts from what the device is measured doing.
func (e *Evaluator) Unconfirmed(device string) {
	e.st.device(device).last = Approved{}
}

// Tripped reports whether rule is tripped on the device.
func (e *Evaluator) Tripped(device string, rule hearth.Rule) bool {
	st, ok := e.st.dev[device]
	return ok && st.trips[rule]
}

// Last returns the last command approved for a device by Evaluate.
func (e *Evaluator) Last(device string) (Approved, bool) {
	st, ok := e.st.dev[device]
	if !ok || !st.last.Valid() {
		return Approved{}, false
	}
	return st.last, true
}

func (s *evalState) device(name string) *devState {
	st, ok := s.dev[name]
	if !ok {
		st = newDevState()
		s.dev[name] = st
	}
	return st
}

// decider is one evaluation: the limits, the state before it and its
// input. It reads prev and never changes it.
type decider struct {
	lim  Limits
	prev *evalState
	in   Input
}

// decide is the evaluation itself, a pure function: from the limits, the
// state the last evaluation left and the input, the decision and the state
// to hand the next one. prev is not changed.
func decide(lim Limits, prev *evalState, in Input) (Decision, *evalState) {
	next := new(*prev)
	next.dev = maps.Clone(prev.dev)
	var d Decision
	if len(in.Devices) == 0 {
		return d, next
	}
	dc := &decider{lim: lim, prev: prev, in: in}
	vs := make([]*verdict, len(in.Devices))
	for i, o := range in.Devices {
		st, ok := prev.dev[o.Reading.Device]
		if !ok {
			st = newDevState()
		}
		vs[i] = dc.assess(o, st.clone())
	}

	// The site target.
	mode, total, siteRule := in.Target.Mode, in.Target.Power, hearth.Rule("")
	if math.IsNaN(float64(total)) || math.IsInf(float64(total), 0) {
		total, siteRule = 0, hearth.RuleMaxDischarge
	}
	switch mode {
	case hearth.ModeSelfConsumption:
		// Hold grid power near zero: the batteries take over whatever the
		// grid carries now.
		sum, ok := measuredSum(vs)
		if ok && dc.gridFresh() {
			mode, total = hearth.ModePower, sum-in.Grid.W
		} else {
			mode, siteRule = hearth.ModeAuto, hearth.RuleMeter
		}
	case hearth.ModeIdle:
		mode, total = hearth.ModePower, 0
	}
	autoCap := false
	if mode == hearth.ModeAuto {
		// The device's own logic runs, but site export still may not pass
		// its limit: while it does, the agent caps the discharge.
		bound, on, capState := dc.autoExportCap(vs)
		next.autoCap, next.capClearFor = capState.on, capState.clearFor
		if on {
			mode, total, siteRule, autoCap = hearth.ModePower, bound, hearth.RuleExport, true
		}
	}

	if mode == hearth.ModePower && !autoCap {
		total, siteRule = dc.siteBounds(vs, total, siteRule)
	}

	var power []*verdict
	for _, v := range vs {
		if !v.safe.Valid() && mode == hearth.ModePower {
			power = append(power, v)
		}
	}
	fixed := holding(vs)
	rest := total
	if mode == hearth.ModePower {
		rest, siteRule = dc.makeRoom(total, fixed, siteRule)
	}
	allocated, shortRule, shortDev := share(power, rest)
	if d.Rule = siteRule; d.Rule == "" && allocated != rest {
		d.Rule, d.RuleDevice = shortRule, shortDev
		if d.Rule == "" {
			for _, v := range vs {
				if v.safe.Valid() && v.safe.rule != "" {
					d.Rule, d.RuleDevice = v.safe.rule, v.obs.Reading.Device
					break
				}
			}
		}
	}

	var sum hearth.Watts
	held := false
	trips := map[hearth.Rule]bool{}
	for _, v := range vs {
		a := v.safe
		switch {
		case a.Valid():
		case mode == hearth.ModeAuto:
			a = Approved{device: v.obs.Reading.Device, mode: hearth.ModeAuto, rule: siteRule}
		default:
			a = dc.ramp(v)
			if a.rule == "" {
				a.rule = v.binding
			}
		}
		switch {
		case v.holds != nil:
			held = true
			sum += *v.holds
		case a.mode == hearth.ModePower:
			held = true
			if v.safe.Valid() {
				sum += v.safe.power
			} else {
				sum += v.target
			}
		}
		ds := DeviceSafety{Device: v.obs.Reading.Device, Held: v.safe.rule, Down: v.down}
		for r, on := range v.st.trips {
			if on {
				trips[r] = true
				ds.Trips = append(ds.Trips, r)
				if w := v.st.why[r]; w != "" {
					if ds.Why == nil {
						ds.Why = map[hearth.Rule]string{}
					}
					ds.Why[r] = w
				}
			}
		}
		slices.Sort(ds.Trips)
		d.Devices = append(d.Devices, ds)
		if a.mode != v.st.last.mode || a.power != v.st.last.power {
			v.st.changed = in.Now
		}
		v.st.last, v.st.lastAt = a, in.Now
		v.st.track(a, in.Now)
		st := v.st
		next.dev[a.device] = &st
		d.Commands = append(d.Commands, a)
	}
	if sum != next.lastTotal || next.totalAt.IsZero() {
		next.lastTotal, next.totalAt = sum, in.Now
	}
	if siteRule == hearth.RuleMeter {
		// self_consumption cannot run without its meter: the state must
		// not say ok while the batteries are only handed back.
		trips[hearth.RuleMeter] = true
		d.SiteTrips = append(d.SiteTrips, hearth.RuleMeter)
	}
	if in.EStop {
		trips[hearth.RuleEStop] = true
		d.SiteTrips = append(d.SiteTrips, hearth.RuleEStop)
	}
	slices.Sort(d.SiteTrips)
	d.Trips = slices.Sorted(maps.Keys(trips))
	if held {
		d.TargetW = &sum
	}
	return d, next
}

// point returns a good, finite value of a reading's point.
func point(r hearth.Reading, name hearth.PointName) (float64, bool) {
	p, ok := r.Get(name)
	if !ok || !p.Good() || math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		return 0, false
	}
	return p.Value, true
}

func clampW(v, lo, hi hearth.Watts) hearth.Watts { return max(lo, min(hi, v)) }
