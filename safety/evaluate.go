package safety

import (
	"fmt"
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
	Trips []string
	// Why explains, for some tripped rules, what tripped them (an
	// implausible device, a value that became unknown).
	Why map[string]string
	// Rule is the rule that bound the site's target before ramping, or "".
	Rule string
	// TargetW is the total power the limits allow before ramping; nil when
	// no device is held at a power (every one is in auto).
	TargetW *hearth.Watts
}

// Physical ranges of the points the rules read. A value outside is not a
// reading but a fault (a wrong scale factor, a sentinel read as a number),
// and counts as unknown whatever the driver made of it.
var plausible = map[string][2]float64{
	PointSoC:         {0, 100},
	PointCellVMin:    {1.5, 5},
	PointCellVMax:    {1.5, 5},
	PointTemp:        {-40, 120},
	PointCellTempMin: {-40, 120},
	PointCellTempMax: {-40, 120},
	PointPower:       {-1e6, 1e6},
	PointBatteryV:    {0, 2000},
	PointBatteryA:    {-5000, 5000},
}

// Plausibility: a device whose readings contradict themselves this many
// times in a row, each with at least signMinW of battery power, is held in
// the safe state until the agent restarts.
const (
	contradictions = 5
	signMinW       = 200
)

type devState struct {
	last    Approved  // the last command approved, as the ramp's base
	lastAt  time.Time // when it was approved
	changed time.Time // when the approved power last changed
	trips   map[string]bool
	why     map[string]string
	seen    map[string]bool // points the device has given good values for
	// Plausibility: consecutive contradicting readings, by check, and the
	// reason the device is held implausible ("" while it is not).
	contra      map[string]int
	implausible string
	signSince   time.Time // since when the approved power has had its sign and size
	signOf      int       // that sign: -1, 0 or 1
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

// Confirm tells the evaluator what a device holds after a write was read
// back: the ramp goes on from there. held is the power its registers
// represent, which may be less than approved (a rate truncated or
// saturated by the register).
func (e *Evaluator) Confirm(device string, held hearth.Watts) {
	st := e.state(device)
	if st.last.mode == hearth.ModePower && !math.IsNaN(float64(held)) {
		st.last.power = held
	}
}

// Unconfirmed tells the evaluator that a write to the device failed: it
// holds whatever it held before, not what was approved, so the next ramp
// starts from what the device is measured doing.
func (e *Evaluator) Unconfirmed(device string) {
	st := e.state(device)
	st.last = Approved{}
}

func (e *Evaluator) state(name string) *devState {
	st, ok := e.dev[name]
	if !ok {
		st = &devState{trips: map[string]bool{}, why: map[string]string{}, seen: map[string]bool{}, contra: map[string]int{}}
		e.dev[name] = st
	}
	return st
}

// verdict is what a device's readings allow before the site target is
// shared out.
type verdict struct {
	obs     Observation
	st      devState
	safe    Approved // when set (valid), the device gets this and nothing else
	lo, hi  hearth.Watts
	loRule  string
	hiRule  string
	batt    hearth.Watts // measured battery power
	battOK  bool
	target  hearth.Watts // its share, before ramping
	binding string       // the rule that bound its share
}

func (e *Evaluator) evaluate(in Input, commit bool) Decision {
	var d Decision
	if len(in.Devices) == 0 {
		return d
	}
	vs := make([]*verdict, len(in.Devices))
	for i, o := range in.Devices {
		vs[i] = e.assess(in, o, e.state(o.Reading.Device).clone())
	}

	// The site target.
	mode, total, siteRule := in.Target.Mode, in.Target.Power, ""
	if math.IsNaN(float64(total)) || math.IsInf(float64(total), 0) {
		total, siteRule = 0, RuleMaxDischarge
	}
	switch mode {
	case hearth.ModeSelfConsumption:
		// Hold grid power near zero: the batteries take over whatever the
		// grid carries now.
		sum, ok := e.measuredSum(vs)
		if ok && e.gridFresh(in) {
			mode, total = hearth.ModePower, sum-in.Grid.W
		} else {
			mode, siteRule = hearth.ModeAuto, RuleMeter
		}
	case hearth.ModeIdle:
		mode, total = hearth.ModePower, 0
	}
	autoCap := false
	if mode == hearth.ModeAuto {
		// The device's own logic runs, but site export still may not pass
		// its limit: while it does, the agent caps the discharge.
		if bound, ok := e.autoExportCap(in, vs, commit); ok {
			mode, total, siteRule, autoCap = hearth.ModePower, bound, RuleExport, true
		}
	}

	if mode == hearth.ModePower && !autoCap {
		total, siteRule = e.siteBounds(in, vs, total, siteRule)
	}

	var power []*verdict
	for _, v := range vs {
		if !v.safe.Valid() && mode == hearth.ModePower {
			power = append(power, v)
		}
	}
	allocated, shortRule := share(power, total)
	if d.Rule = siteRule; d.Rule == "" && allocated != total {
		d.Rule = shortRule
		if d.Rule == "" {
			for _, v := range vs {
				if v.safe.Valid() && v.safe.rule != "" {
					d.Rule = v.safe.rule
					break
				}
			}
		}
	}

	var sum hearth.Watts
	held := false
	trips := map[string]bool{}
	why := map[string]string{}
	for _, v := range vs {
		a := v.safe
		switch {
		case a.Valid():
		case mode == hearth.ModeAuto:
			a = Approved{device: v.obs.Reading.Device, mode: hearth.ModeAuto, rule: siteRule}
		default:
			a = e.ramp(in, v)
			if a.rule == "" {
				a.rule = v.binding
			}
		}
		if a.mode == hearth.ModePower {
			held = true
			if v.safe.Valid() {
				sum += v.safe.power
			} else {
				sum += v.target
			}
		}
		for r, on := range v.st.trips {
			if on {
				trips[r] = true
				if w := v.st.why[r]; w != "" {
					why[r] = w
				}
			}
		}
		if commit {
			if a.mode != v.st.last.mode || a.power != v.st.last.power {
				v.st.changed = in.Now
			}
			v.st.last, v.st.lastAt = a, in.Now
			v.st.track(a, in.Now)
			*e.dev[a.device] = v.st
		}
		d.Commands = append(d.Commands, a)
	}
	if commit {
		if sum != e.lastTotal || e.totalAt.IsZero() {
			e.lastTotal, e.totalAt = sum, in.Now
		}
	}
	if siteRule == RuleMeter {
		// self_consumption cannot run without its meter: the state must
		// not say ok while the batteries are only handed back.
		trips[RuleMeter] = true
	}
	for r := range trips {
		d.Trips = append(d.Trips, r)
	}
	sort.Strings(d.Trips)
	if len(why) > 0 {
		d.Why = why
	}
	if held {
		d.TargetW = &sum
	}
	return d
}

func (st devState) clone() devState {
	c := st
	c.trips = cloneMap(st.trips)
	c.why = cloneMap(st.why)
	c.seen = cloneMap(st.seen)
	c.contra = cloneMap(st.contra)
	return c
}

// track remembers since when the approved power has had its sign and a
// size worth checking the device's response against.
func (st *devState) track(a Approved, now time.Time) {
	sign := 0
	if a.mode == hearth.ModePower && math.Abs(float64(a.power)) >= signMinW {
		sign = 1
		if a.power < 0 {
			sign = -1
		}
	}
	if sign != st.signOf {
		st.signOf, st.signSince = sign, now
	}
}

// assess checks one device's reading against every rule that is the
// device's own, and returns what it allows: a command it must get (the
// safe state), or the range of power it may be shared.
func (e *Evaluator) assess(in Input, o Observation, st devState) *verdict {
	l := e.lim
	name := o.Reading.Device
	v := &verdict{obs: o, st: st}
	s := &v.st
	setTrip := func(rule string, on bool) {
		switch {
		case rule == "":
		case on:
			s.trips[rule] = true
		default:
			delete(s.trips, rule)
			delete(s.why, rule)
		}
	}
	safe := func(mode hearth.Mode, rule string) *verdict {
		v.safe = Approved{device: name, mode: mode, rule: rule}
		return v
	}

	setTrip(RuleEStop, in.EStop)
	if in.EStop {
		return safe(hearth.ModePower, RuleEStop)
	}
	stale := o.At.IsZero() || in.Now.Sub(o.At) > l.MaxReadingAge
	setTrip(RuleStale, stale)
	if stale {
		return safe(hearth.ModeAuto, RuleStale)
	}
	batt, battOK := e.value(o, s, PointPower)
	v.batt, v.battOK = hearth.Watts(batt), battOK

	// Each point a rule needs: unchecked while the device has never given
	// it (it does not have that point); a good, plausible value is judged
	// with hysteresis; a value that was there and is gone, or that cannot
	// be physically true, is unknown: its rules act as tripped, and a trip
	// clears only on a good value inside the window, less the hysteresis.
	unknown := false
	window := func(pt string, lo, hi, hyst float64, ruleLo, ruleHi string) {
		x, state := e.read(o, s, pt)
		switch state {
		case absent:
			setTrip(ruleLo, false)
			setTrip(ruleHi, false)
		case bad:
			unknown = true
			for _, r := range []string{ruleLo, ruleHi} {
				if r != "" {
					s.trips[r] = true
					if s.why[r] == "" {
						s.why[r] = pt + " unknown"
					}
				}
			}
		default:
			setTrip(ruleLo, x < lo || s.trips[ruleLo] && x < lo+hyst)
			setTrip(ruleHi, x > hi || s.trips[ruleHi] && x > hi-hyst)
		}
	}
	inf := math.Inf(1)
	window(PointCellVMin, l.CellVMin, inf, l.CellVHysteresis, RuleCellVMin, "")
	window(PointCellVMax, -inf, l.CellVMax, l.CellVHysteresis, "", RuleCellVMax)
	window(PointTemp, l.TempCMin, l.TempCMax, l.TempHysteresisC, RuleTempMin, RuleTempMax)
	window(PointCellTempMax, -inf, l.TempCMax, l.TempHysteresisC, "", RuleCellTempMax)
	// Charging lithium cells below freezing plates them: no charge while
	// the coldest cell is at or below ChargeTempCMin.
	window(PointCellTempMin, l.ChargeTempCMin, inf, l.TempHysteresisC, RuleChargeTemp, "")

	soc, socState := e.read(o, s, PointSoC)
	if socState != good && !s.seen[PointSoC] {
		socState = absent // never read: where the battery stands is not known
	}
	switch socState {
	case good:
		setTrip(RuleSoCMin, soc <= l.SoCMinPct || s.trips[RuleSoCMin] && soc < l.SoCMinPct+l.SoCHysteresisPct)
		setTrip(RuleSoCMax, soc >= l.SoCMaxPct || s.trips[RuleSoCMax] && soc > l.SoCMaxPct-l.SoCHysteresisPct)
	case bad:
		// Known before, unknown now: neither charge nor discharge.
		unknown = true
		for _, r := range []string{RuleSoCMin, RuleSoCMax} {
			s.trips[r] = true
			if s.why[r] == "" {
				s.why[r] = PointSoC + " unknown"
			}
		}
	}
	setTrip(RuleReadingQuality, unknown || socState == absent)
	if socState == absent {
		// Never read: nothing can be commanded; the device keeps its own
		// logic until it says where it stands.
		return safe(hearth.ModeAuto, RuleReadingQuality)
	}

	e.plausibility(in, o, s, v)
	if s.implausible != "" {
		s.trips[RuleImplausible] = true
		s.why[RuleImplausible] = s.implausible
		return safe(hearth.ModeAuto, RuleImplausible)
	}

	for _, r := range []string{RuleCellVMin, RuleCellVMax, RuleTempMin, RuleTempMax, RuleCellTempMax} {
		if s.trips[r] {
			if s.why[r] != "" {
				r = RuleReadingQuality // held for a value it cannot read
			}
			return safe(hearth.ModePower, r)
		}
	}
	v.lo, v.loRule = -l.MaxChargeW, RuleMaxCharge
	v.hi, v.hiRule = l.MaxDischargeW, RuleMaxDischarge
	if s.trips[RuleSoCMin] {
		v.hi, v.hiRule = 0, RuleSoCMin
	}
	if s.trips[RuleSoCMax] {
		v.lo, v.loRule = 0, RuleSoCMax
	}
	if s.trips[RuleChargeTemp] && v.lo < 0 {
		v.lo, v.loRule = 0, RuleChargeTemp
	}
	return v
}

type readState int

const (
	absent readState = iota // the device does not give the point
	bad                     // the device gave it, and now cannot, or gives nonsense
	good
)

// read returns a point's value and whether it is usable, remembering the
// points the device has given good values for.
func (e *Evaluator) read(o Observation, s *devState, name string) (float64, readState) {
	x, ok := e.value(o, s, name)
	switch {
	case ok:
		return x, good
	case s.seen[name]:
		return 0, bad
	}
	p, has := o.Reading.Points[name]
	if has && (p.Quality == hearth.QualityOutOfRange || p.Good()) {
		// A value from the first reading on that cannot be true: the
		// device has the point, and it is broken.
		return 0, bad
	}
	if has && p.Quality == hearth.QualityCommError {
		// Not read this time; whether the device has it is not known.
		return 0, bad
	}
	return 0, absent
}

// value returns a point's value when it is good, finite and physically
// possible, and marks the point as one the device has.
func (e *Evaluator) value(o Observation, s *devState, name string) (float64, bool) {
	x, ok := point(o.Reading, name)
	if !ok {
		return 0, false
	}
	if r, has := plausible[name]; has && (x < r[0] || x > r[1]) {
		return 0, false
	}
	s.seen[name] = true
	return x, true
}

// plausibility looks for a device contradicting itself: battery power of
// one sign while its own voltage and current, or its charge status, say
// the other; or power of the opposite sign to what it was commanded, held
// long enough to follow. A contradiction seen contradictions times in a
// row holds the device in the safe state, with the reason.
func (e *Evaluator) plausibility(in Input, o Observation, s *devState, v *verdict) {
	if s.implausible != "" || !v.battOK || math.Abs(float64(v.batt)) < signMinW {
		return
	}
	sign := 1.0
	if v.batt < 0 {
		sign = -1
	}
	check := func(name string, contradicts bool, why string) {
		if !contradicts {
			delete(s.contra, name)
			return
		}
		s.contra[name]++
		if s.contra[name] >= contradictions {
			s.implausible = why
		}
	}
	volts, vok := e.value(o, s, PointBatteryV)
	amps, aok := e.value(o, s, PointBatteryA)
	if vok && aok && math.Abs(amps) >= 1 {
		check("v_times_a", volts*amps*sign < 0,
			fmt.Sprintf("power_w %.0f W but battery_v × battery_a = %.0f W: the device reports power with the wrong sign", v.batt, volts*amps))
	}
	if cs, ok := point(o.Reading, PointChargeState); ok {
		// SunSpec ChaSt: 3 discharging, 4 charging.
		check("charge_state", cs == 3 && sign < 0 || cs == 4 && sign > 0,
			fmt.Sprintf("power_w %.0f W but the device says it is %s", v.batt, map[bool]string{true: "discharging", false: "charging"}[cs == 3]))
	}
	if s.signOf != 0 && in.Now.Sub(s.signSince) >= e.lim.EffectiveWithin &&
		float64(s.signOf)*float64(v.batt) < 0 && math.Abs(float64(v.batt)) >= 0.5*math.Abs(float64(s.last.power)) {
		check("response", true, fmt.Sprintf("commanded %.0f W for %s, measured %.0f W: the device reports the opposite sign", float64(s.last.power),
			in.Now.Sub(s.signSince).Round(time.Second), v.batt))
	} else {
		check("response", false, "")
	}
}

// measuredSum is the battery power the devices report, if every one does.
func (e *Evaluator) measuredSum(vs []*verdict) (hearth.Watts, bool) {
	var sum hearth.Watts
	for _, v := range vs {
		if !v.battOK && !v.safe.Valid() {
			return 0, false
		}
		sum += v.batt
	}
	return sum, true
}

// siteBounds applies the limits that hold for the whole site to the total:
// the site's own charge and discharge caps, and site export and import by
// the meter (or, without a fresh meter, by the inverters' own output).
func (e *Evaluator) siteBounds(in Input, vs []*verdict, total hearth.Watts, rule string) (hearth.Watts, string) {
	l := e.lim
	bind := func(v hearth.Watts, r string) {
		if v != total {
			total = v
			if rule == "" {
				rule = r
			}
		}
	}
	if l.SiteMaxDischargeW != nil {
		bind(min(total, *l.SiteMaxDischargeW), RuleSiteDischarge)
	}
	if l.SiteMaxChargeW != nil {
		bind(max(total, -*l.SiteMaxChargeW), RuleSiteCharge)
	}
	if l.ExportLimitW != nil && total > 0 {
		bind(min(total, max(e.exportBound(in, vs), 0)), RuleExport)
	}
	if l.ImportLimitW != nil && total < 0 {
		if bound, ok := e.importBound(in, vs); ok {
			bind(max(total, min(bound, 0)), RuleImport)
		}
	}
	return total, rule
}

// coincident reports whether the meter sample was taken after the last
// change of what the site commands: only then does it show the effect of
// that command, and can the headroom it gives be added to it.
func (e *Evaluator) coincident(in Input) bool {
	return e.gridFresh(in) && (e.totalAt.IsZero() || in.Grid.At.After(e.totalAt))
}

// exportBound is the most the site's batteries may discharge with export
// at the limit: from the meter when it is fresh, else from the inverters'
// own AC output (an upper bound on export, since the house load is not
// known), else nothing. A meter sample taken before the last change of
// command may lower the bound but not raise it above what is commanded:
// the meter has not seen that change yet.
func (e *Evaluator) exportBound(in Input, vs []*verdict) hearth.Watts {
	lim := *e.lim.ExportLimitW
	if sum, ok := e.measuredSum(vs); ok && e.gridFresh(in) {
		bound := sum + lim - in.Grid.W
		if !e.coincident(in) {
			bound = min(bound, max(e.lastTotal, 0))
		}
		return bound
	}
	var bound hearth.Watts = lim
	for _, v := range vs {
		ac, ok := point(v.obs.Reading, PointACPower)
		if !ok || !v.battOK {
			return 0
		}
		bound -= max(hearth.Watts(ac)-v.batt, 0) // PV behind the inverter
	}
	return bound
}

// importBound is the most the site's batteries may charge (a negative
// total) with grid import at its limit, from a fresh meter only; without
// one the import limit cannot be judged and charging is not capped by it.
func (e *Evaluator) importBound(in Input, vs []*verdict) (hearth.Watts, bool) {
	sum, ok := e.measuredSum(vs)
	if !ok || !e.gridFresh(in) {
		return 0, false
	}
	bound := sum - in.Grid.W - *e.lim.ImportLimitW
	if !e.coincident(in) {
		bound = max(bound, min(e.lastTotal, 0))
	}
	return bound, true
}

// autoExportCap decides, while the target is auto, whether export beyond
// its limit makes the agent cap the batteries' discharge, and to what. It
// engages when the meter shows export over the limit with the batteries
// discharging, and lets go when export has stayed under the limit, less a
// margin, for autoCapRelease.
func (e *Evaluator) autoExportCap(in Input, vs []*verdict, commit bool) (hearth.Watts, bool) {
	if e.lim.ExportLimitW == nil || !e.gridFresh(in) {
		if commit {
			e.autoCap = false
		}
		return 0, false
	}
	lim := *e.lim.ExportLimitW
	sum, ok := e.measuredSum(vs)
	if !ok {
		return 0, false
	}
	capOn := e.autoCap
	clearFor := e.capClearFor
	margin := max(100, 0.1*lim)
	switch {
	case !capOn && in.Grid.W > lim && sum > 0:
		capOn, clearFor = true, time.Time{}
	case capOn && in.Grid.W < lim-margin:
		if clearFor.IsZero() {
			clearFor = in.Now
		}
		if in.Now.Sub(clearFor) >= autoCapRelease {
			capOn = false
		}
	case capOn:
		clearFor = time.Time{}
	}
	if commit {
		e.autoCap, e.capClearFor = capOn, clearFor
	}
	if !capOn {
		return 0, false
	}
	return max(e.exportBound(in, vs), 0), true
}

// autoCapRelease is how long export must stay under its limit before the
// agent hands the batteries back to their own logic.
const autoCapRelease = 30 * time.Second

// share splits total over the devices, each within its range: equal
// shares first, then what a device could not take goes to the others. It
// returns the total placed and, when that falls short, the rule that bound
// the last device to fill up.
func share(vs []*verdict, total hearth.Watts) (hearth.Watts, string) {
	if len(vs) == 0 {
		return 0, ""
	}
	open := append([]*verdict(nil), vs...)
	left := total
	for _, v := range vs {
		v.target, v.binding = 0, ""
	}
	rule := ""
	for len(open) > 0 {
		each := left / hearth.Watts(len(open))
		var next []*verdict
		for _, v := range open {
			want := v.target + each
			switch {
			case want > v.hi:
				left -= v.hi - v.target
				v.target, v.binding, rule = v.hi, v.hiRule, v.hiRule
			case want < v.lo:
				left -= v.lo - v.target
				v.target, v.binding, rule = v.lo, v.loRule, v.loRule
			default:
				next = append(next, v)
			}
		}
		if len(next) == len(open) {
			for _, v := range open {
				v.target += each
			}
			left = 0
			break
		}
		open = next
	}
	var placed hearth.Watts
	for _, v := range vs {
		placed += v.target
	}
	if math.Abs(float64(placed-total)) < 1e-6 {
		return total, ""
	}
	return placed, rule
}

// ramp limits a device's move towards its target: moves away from zero at
// RampWPerS from the last command the device holds; moves towards zero are
// immediate, since that is always the safe direction.
func (e *Evaluator) ramp(in Input, v *verdict) Approved {
	st := &v.st
	last := hearth.Watts(0)
	dt := 0.0
	if st.last.mode == hearth.ModePower {
		last = st.last.power
		dt = max(in.Now.Sub(st.lastAt).Seconds(), 0)
	} else if v.battOK {
		// Taking over from the device's own logic (or after a write that
		// failed): ramp from what the battery does now, not from 0, so
		// the takeover causes no dip. The window always spans 0, so the
		// result stays between 0 and the limited target whatever the
		// measurement says.
		last = v.batt
	}
	step := hearth.Watts(e.lim.RampWPerS * dt)
	lo, hi := min(last, 0)-step, max(last, 0)+step
	a := Approved{device: v.obs.Reading.Device, mode: hearth.ModePower, power: clampW(v.target, lo, hi)}
	if a.power != v.target {
		a.rule = RuleRamp
	}
	return a
}

func (e *Evaluator) gridFresh(in Input) bool {
	g := in.Grid
	return g != nil && g.Quality == hearth.QualityGood && !g.At.IsZero() &&
		in.Now.Sub(g.At) <= e.lim.MaxReadingAge &&
		!math.IsNaN(float64(g.W)) && !math.IsInf(float64(g.W), 0) && math.Abs(float64(g.W)) < 1e6
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

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
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
