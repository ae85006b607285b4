package safety

import (
	"math"

	"github.com/hearth-energy/hearth"
)

// holding is the power the devices that cannot be read may still hold.
func holding(vs []*verdict) hearth.Watts {
	var sum hearth.Watts
	for _, v := range vs {
		if v.holds != nil {
			sum += *v.holds
		}
	}
	return sum
}

// makeRoom is what the devices that take shares get of the site's total
// when others, which cannot be read, may still hold fixed: the total less
// fixed, never turned to the other direction to make up for them, except
// as far as a site cap needs it; and within the site caps with fixed
// counted in.
func (dc *decider) makeRoom(total, fixed hearth.Watts, rule hearth.Rule) (hearth.Watts, hearth.Rule) {
	if fixed == 0 {
		return total, rule
	}
	rest := total - fixed
	if total >= 0 {
		rest = max(rest, 0)
	} else {
		rest = min(rest, 0)
	}
	b := binding{rest, rule}
	b.siteCaps(dc.lim, fixed)
	return b.w, b.rule
}

// share splits total over the devices, each within its range: equal
// shares first, then what a device could not take goes to the others. It
// returns the total placed and, when that falls short, the rule that bound
// the last device to fill up, and that device.
func share(vs []*verdict, total hearth.Watts) (hearth.Watts, hearth.Rule, string) {
	if len(vs) == 0 {
		return 0, "", ""
	}
	open := append([]*verdict(nil), vs...)
	left := total
	for _, v := range vs {
		v.target, v.binding = 0, ""
	}
	var rule hearth.Rule
	var dev string
	for len(open) > 0 {
		each := left / hearth.Watts(len(open))
		var next []*verdict
		for _, v := range open {
			want := v.target + each
			switch {
			case want > v.hi:
				left -= v.hi - v.target
				v.target, v.binding, rule, dev = v.hi, v.hiRule, v.hiRule, v.obs.Reading.Device
			case want < v.lo:
				left -= v.lo - v.target
				v.target, v.binding, rule, dev = v.lo, v.loRule, v.loRule, v.obs.Reading.Device
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
		return total, "", ""
	}
	return placed, rule, dev
}

// ramp limits a device's move towards its target: moves away from zero at
// RampWPerS from the last command the device holds; moves towards zero are
// immediate, since that is always the safe direction.
func (dc *decider) ramp(v *verdict) Approved {
	st := &v.st
	last := hearth.Watts(0)
	dt := 0.0
	if st.last.mode == hearth.ModePower {
		last = st.last.power
		dt = max(dc.in.Now.Sub(st.lastAt).Seconds(), 0)
	} else if v.battOK {
		// Taking over from the device's own logic (or after a write that
		// failed): ramp from what the battery does now, not from 0, so
		// the takeover causes no dip. The window always spans 0, so the
		// result stays between 0 and the limited target whatever the
		// measurement says.
		last = v.batt
	}
	step := hearth.Watts(dc.lim.RampWPerS * dt)
	lo, hi := min(last, 0)-step, max(last, 0)+step
	a := Approved{device: v.obs.Reading.Device, mode: hearth.ModePower, power: clampW(v.target, lo, hi)}
	if a.power != v.target {
		a.rule = hearth.RuleRamp
	}
	return a
}
