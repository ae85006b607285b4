package safety

import (
	"fmt"
	"maps"
	"math"
	"math/bits"
	"time"

	"github.com/hearth-energy/hearth"
)

// Plausibility: a device whose readings contradict themselves this many
// times in a row, each with at least signMinW of battery power, is held in
// the safe state until the agent restarts.
const (
	contradictions = 5
	signMinW       = 200
)

// devState is what the evaluator remembers of one device.
type devState struct {
	last    Approved  // the last command approved, as the ramp's base
	lastAt  time.Time // when it was approved
	changed time.Time // when the approved power last changed
	trips   map[hearth.Rule]bool
	why     map[hearth.Rule]string
	seen    map[hearth.PointName]bool // points the device has given good values for
	// The arrival of the last reading judged for plausibility and
	// divergence: each reading is judged once, however many ticks see it.
	judged time.Time
	// Plausibility: consecutive contradicting readings, by check, and the
	// reason the device is held implausible ("" while it is not).
	contra      map[string]int
	implausible string
	signSince   time.Time // since when the approved power has had its sign and size
	signOf      int       // that sign: -1, 0 or 1
	// Divergence: the battery power the last reading judged gave (prevOK
	// false when none), and how many readings in a row moved away from
	// the command the device held.
	prevW   float64
	prevOK  bool
	diverge int
	// Swings: the last change of battery power of at least signMinW
	// between two readings, and which of the last swingWindow readings
	// reversed the one before it, at no much smaller size (a bit each,
	// the newest lowest).
	prevStep float64
	swings   uint32
}

func newDevState() *devState {
	return &devState{trips: map[hearth.Rule]bool{}, why: map[hearth.Rule]string{}, seen: map[hearth.PointName]bool{}, contra: map[string]int{}}
}

func (st devState) clone() devState {
	c := st
	c.trips = maps.Clone(st.trips)
	c.why = maps.Clone(st.why)
	c.seen = maps.Clone(st.seen)
	c.contra = maps.Clone(st.contra)
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

// verdict is what a device's readings allow before the site target is
// shared out.
type verdict struct {
	obs     Observation
	st      devState
	safe    Approved // when set (valid), the device gets this and nothing else
	lo, hi  hearth.Watts
	loRule  hearth.Rule
	hiRule  hearth.Rule
	batt    hearth.Watts // measured battery power
	battOK  bool
	target  hearth.Watts  // its share, before ramping
	binding hearth.Rule   // the rule that bound its share
	down    bool          // the device could not be read at all
	holds   *hearth.Watts // what a device that cannot be read may still hold
}

// assess checks one device's reading against every rule that is the
// device's own, and returns what it allows: a command it must get (the
// safe state), or the range of power it may be shared.
func (dc *decider) assess(o Observation, st devState) *verdict {
	l, in := dc.lim, dc.in
	name := o.Reading.Device
	v := &verdict{obs: o, st: st}
	s := &v.st
	setTrip := func(rule hearth.Rule, on bool) {
		switch {
		case rule == "":
		case on:
			s.trips[rule] = true
		default:
			delete(s.trips, rule)
			delete(s.why, rule)
		}
	}
	safe := func(mode hearth.Mode, rule hearth.Rule) *verdict {
		v.safe = Approved{device: name, mode: mode, rule: rule}
		return v
	}

	delete(s.trips, hearth.RuleEStop) // the e-stop holds the site, not one device
	if in.EStop {
		return safe(hearth.ModePower, hearth.RuleEStop)
	}
	stale := o.At.IsZero() || in.Now.Sub(o.At) > l.MaxReadingAge
	setTrip(hearth.RuleStale, stale)
	if stale {
		setTrip(hearth.RuleDeviceDown, false)
		v.holds = holdOf(o)
		return safe(hearth.ModeAuto, hearth.RuleStale)
	}
	// A device that cannot be read at all is down: that is one fact,
	// device_down, not a trip of every rule whose point it did not give.
	// Its rules keep the state they had until it answers again. Until
	// its revert timer lapses it may still run its last command, and
	// counts at that.
	v.down = unreadable(o.Reading)
	setTrip(hearth.RuleDeviceDown, v.down)
	if v.down {
		v.holds = holdOf(o)
		return safe(hearth.ModePower, hearth.RuleDeviceDown)
	}
	batt, battOK := value(o, s, hearth.PointPower)
	v.batt, v.battOK = hearth.Watts(batt), battOK

	// Each point a rule needs: unchecked while the device has never given
	// it (it does not have that point); a good, plausible value is judged
	// with hysteresis; a value that was there and is gone, or that cannot
	// be physically true, is unknown: its rules act as tripped, and a trip
	// clears only on a good value inside the window, less the hysteresis.
	unknown := false
	window := func(pt hearth.PointName, lo, hi, hyst float64, ruleLo, ruleHi hearth.Rule) {
		x, state := read(o, s, pt)
		switch state {
		case absent:
			setTrip(ruleLo, false)
			setTrip(ruleHi, false)
		case bad:
			unknown = true
			for _, r := range []hearth.Rule{ruleLo, ruleHi} {
				if r != "" {
					s.trips[r] = true
					if s.why[r] == "" {
						s.why[r] = pt.String() + " unknown"
					}
				}
			}
		default:
			setTrip(ruleLo, x < lo || s.trips[ruleLo] && x < lo+hyst)
			setTrip(ruleHi, x > hi || s.trips[ruleHi] && x > hi-hyst)
		}
	}
	inf := math.Inf(1)
	window(hearth.PointCellVMin, l.CellVMin, inf, l.CellVHysteresis, hearth.RuleCellVMin, "")
	window(hearth.PointCellVMax, -inf, l.CellVMax, l.CellVHysteresis, "", hearth.RuleCellVMax)
	window(hearth.PointTemp, l.TempCMin, l.TempCMax, l.TempHysteresisC, hearth.RuleTempMin, hearth.RuleTempMax)
	window(hearth.PointCellTempMax, -inf, l.TempCMax, l.TempHysteresisC, "", hearth.RuleCellTempMax)
	// Charging lithium cells below freezing plates them: no charge while
	// the coldest cell is at or below ChargeTempCMin.
	window(hearth.PointCellTempMin, l.ChargeTempCMin, inf, l.TempHysteresisC, hearth.RuleChargeTemp, "")

	soc, socState := read(o, s, hearth.PointSoC)
	if socState != good && !s.seen[hearth.PointSoC] {
		socState = absent // never read: where the battery stands is not known
	}
	switch socState {
	case good:
		setTrip(hearth.RuleSoCMin, soc <= l.SoCMinPct || s.trips[hearth.RuleSoCMin] && soc < l.SoCMinPct+l.SoCHysteresisPct)
		setTrip(hearth.RuleSoCMax, soc >= l.SoCMaxPct || s.trips[hearth.RuleSoCMax] && soc > l.SoCMaxPct-l.SoCHysteresisPct)
	case bad:
		// Known before, unknown now: neither charge nor discharge.
		unknown = true
		for _, r := range []hearth.Rule{hearth.RuleSoCMin, hearth.RuleSoCMax} {
			s.trips[r] = true
			if s.why[r] == "" {
				s.why[r] = hearth.PointSoC.String() + " unknown"
			}
		}
	}
	setTrip(hearth.RuleReadingQuality, unknown || socState == absent)
	if socState == absent {
		// Never read: nothing can be commanded; the device keeps its own
		// logic until it says where it stands.
		return safe(hearth.ModeAuto, hearth.RuleReadingQuality)
	}

	if !o.At.Equal(s.judged) {
		// The decider runs more often than readings arrive: a reading
		// evaluated again on a later tick is the same evidence, and
		// counts once towards a contradiction or a divergence.
		s.judged = o.At
		dc.plausibility(o, s, v)
		dc.divergence(o, s, v)
	}
	if s.implausible != "" {
		s.trips[hearth.RuleImplausible] = true
		s.why[hearth.RuleImplausible] = s.implausible
		return safe(hearth.ModeAuto, hearth.RuleImplausible)
	}

	for _, r := range []hearth.Rule{hearth.RuleCellVMin, hearth.RuleCellVMax, hearth.RuleTempMin, hearth.RuleTempMax, hearth.RuleCellTempMax} {
		if s.trips[r] {
			if s.why[r] != "" {
				r = hearth.RuleReadingQuality // held for a value it cannot read
			}
			return safe(hearth.ModePower, r)
		}
	}
	v.lo, v.loRule = -l.MaxChargeW, hearth.RuleMaxCharge
	v.hi, v.hiRule = l.MaxDischargeW, hearth.RuleMaxDischarge
	if c, ok := l.UnguardedMaxW[name]; ok {
		// No timeout on the device: what it may hold if the agent dies.
		if c < v.hi {
			v.hi, v.hiRule = c, hearth.RuleUnguardedMax
		}
		if -c > v.lo {
			v.lo, v.loRule = -c, hearth.RuleUnguardedMax
		}
	}
	if s.trips[hearth.RuleSoCMin] {
		v.hi, v.hiRule = 0, hearth.RuleSoCMin
	}
	if s.trips[hearth.RuleSoCMax] {
		v.lo, v.loRule = 0, hearth.RuleSoCMax
	}
	if s.trips[hearth.RuleChargeTemp] && v.lo < 0 {
		v.lo, v.loRule = 0, hearth.RuleChargeTemp
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
func read(o Observation, s *devState, name hearth.PointName) (float64, readState) {
	x, ok := value(o, s, name)
	switch {
	case ok:
		return x, good
	case s.seen[name]:
		return 0, bad
	}
	p, has := o.Reading.Get(name)
	if has && (p.Quality == hearth.QualityOutOfRange || p.Good()) {
		// A value from the first reading on that cannot be true: the
		// device has the point, and it is broken.
		return 0, bad
	}
	// Never given (not implemented, or not read yet): the device is not
	// known to have the point, and no rule judges it.
	return 0, absent
}

// unreadable reports whether a reading holds nothing the device said: no
// point with a value, and some that could not be read.
func unreadable(r hearth.Reading) bool {
	comm := false
	for _, p := range r.Points {
		switch p.Quality {
		case hearth.QualityGood, hearth.QualityOutOfRange:
			return false
		case hearth.QualityCommError:
			comm = true
		}
	}
	return comm
}

// value returns a point's value when it is good, finite and physically
// possible, and marks the point as one the device has.
func value(o Observation, s *devState, name hearth.PointName) (float64, bool) {
	x, ok := point(o.Reading, name)
	if !ok {
		return 0, false
	}
	if r, has := hearth.PhysicalRange(name.String(), 0); has && !r.Contains(x) {
		return 0, false
	}
	s.seen[name] = true
	return x, true
}

// plausibility looks for a device contradicting itself: battery power of
// one sign while its own voltage and current, or its charge status, say
// the other; or power of the opposite sign to what it was commanded, held
// long enough to follow. A contradiction in contradictions readings in a
// row holds the device in the safe state, with the reason. It is called
// once per reading.
func (dc *decider) plausibility(o Observation, s *devState, v *verdict) {
	in := dc.in
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
	volts, vok := value(o, s, hearth.PointBatteryV)
	amps, aok := value(o, s, hearth.PointBatteryA)
	if vok && aok && math.Abs(amps) >= 1 {
		check("v_times_a", volts*amps*sign < 0,
			fmt.Sprintf("power_w %.0f W but battery_v × battery_a = %.0f W: the device reports power with the wrong sign", v.batt, volts*amps))
	}
	if cs, ok := point(o.Reading, hearth.PointChargeState); ok {
		// SunSpec ChaSt: 3 discharging, 4 charging.
		check("charge_state", cs == 3 && sign < 0 || cs == 4 && sign > 0,
			fmt.Sprintf("power_w %.0f W but the device says it is %s", v.batt, map[bool]string{true: "discharging", false: "charging"}[cs == 3]))
	}
	if s.signOf != 0 && in.Now.Sub(s.signSince) >= dc.lim.EffectiveWithin &&
		float64(s.signOf)*float64(v.batt) < 0 && math.Abs(float64(v.batt)) >= 0.5*math.Abs(float64(s.last.power)) {
		check("response", true, fmt.Sprintf("commanded %.0f W for %s, measured %.0f W: the device reports the opposite sign", float64(s.last.power),
			in.Now.Sub(s.signSince).Round(time.Second), v.batt))
	} else {
		check("response", false, "")
	}
}

// holdOf is the power a device that cannot be read may still hold.
func holdOf(o Observation) *hearth.Watts {
	if o.MayHold == nil || math.IsNaN(float64(*o.MayHold)) || math.IsInf(float64(*o.MayHold), 0) {
		return nil
	}
	w := *o.MayHold
	return &w
}

// divergence looks at the device's response alone, once per reading:
//
//   - whether its battery power moved away from the command it held, by at
//     least signMinW, since the reading before. A device that follows moves
//     towards its command (or, slow or stuck, not at all); one whose
//     reported power has the wrong sign throughout (voltage × current and
//     charge status agreeing with it) moves away. contradictions such
//     readings in a row hold the device implausible;
//   - whether its power swings: a change since the reading before of at
//     least signMinW, the other way from the last such change, not much
//     smaller, and ending away from the command it held. A loop that
//     diverges (self_consumption over a battery whose sign is inverted)
//     swings so, between limits or between zero and a limit; a device that
//     follows its commands, even commands a cloud reverses every reading,
//     and a loop that settles, do not. swingReadings such reversals within the last swingWindow
//     readings hold it implausible.
func (dc *decider) divergence(o Observation, s *devState, v *verdict) {
	prev, prevOK := s.prevW, s.prevOK
	s.prevW, s.prevOK = float64(v.batt), v.battOK
	if s.implausible != "" || !v.battOK || !prevOK || s.last.mode != hearth.ModePower || !o.At.After(s.changed) {
		s.diverge, s.swings, s.prevStep = 0, 0, 0
		return
	}
	cmd, now := float64(s.last.power), float64(v.batt)
	step := now - prev
	s.swings = s.swings << 1 & (1<<swingWindow - 1)
	if math.Abs(step) >= signMinW {
		// A device that lands on the command it holds follows it, however
		// often a cloud reverses that command; only a swing that ends
		// away from the command is the loop's.
		following := math.Abs(now-cmd) < signMinW
		if !following && step*s.prevStep < 0 && math.Abs(step) >= 0.75*math.Abs(s.prevStep) {
			s.swings |= 1
		}
		s.prevStep = step
	}
	if math.Abs(now-cmd) >= math.Abs(prev-cmd)+signMinW {
		s.diverge++
	} else {
		s.diverge = 0
	}
	switch {
	case s.diverge >= contradictions:
		s.implausible = fmt.Sprintf("commanded %.0f W, measured %.0f W after %.0f W: %d readings in a row moved away from the command "+
			"(the loop diverges; the device may report power with the wrong sign)", cmd, now, prev, s.diverge)
	case bits.OnesCount32(s.swings) >= swingReadings:
		s.implausible = fmt.Sprintf("power_w swung back and forth %d times in %d readings, by %.0f W the last time "+
			"(commanded %.0f W, measured %.0f W after %.0f W): the loop diverges; the device may report power with the wrong sign",
			bits.OnesCount32(s.swings), swingWindow, math.Abs(step), cmd, now, prev)
	}
}

// A device whose power reverses by at least signMinW, not much less each
// time, on swingReadings of its last swingWindow readings is held
// implausible.
const (
	swingWindow   = 10
	swingReadings = 5
)
