package safety

import (
	"math"
	"time"

	"github.com/hearth-energy/hearth"
)

// measuredSum is the battery power the devices report, if every one does
// (or, not read, may still hold).
func measuredSum(vs []*verdict) (hearth.Watts, bool) {
	var sum hearth.Watts
	for _, v := range vs {
		switch {
		case v.holds != nil:
			sum += *v.holds // not read: counted at what it may still hold
		case !v.battOK && !v.safe.Valid():
			return 0, false
		default:
			sum += v.batt
		}
	}
	return sum, true
}

// siteBounds applies the limits that hold for the whole site to the total:
// the site's own charge and discharge caps, and site export and import by
// the meter (or, without a fresh meter, by the inverters' own output).
func (dc *decider) siteBounds(vs []*verdict, total hearth.Watts, rule hearth.Rule) (hearth.Watts, hearth.Rule) {
	l := dc.lim
	b := binding{total, rule}
	b.siteCaps(l, 0)
	if l.ExportLimitW != nil && b.w > 0 {
		b.to(min(b.w, max(dc.exportBound(vs), 0)), hearth.RuleExport)
	}
	if l.ImportLimitW != nil && b.w < 0 {
		if bound, seen, ok := dc.importBound(vs); ok {
			// What the meter has not seen yet holds the charge back for
			// a reading, as a ramp does: that is no binding of the limit.
			r := hearth.Rule("")
			if max(b.w, min(seen, 0)) != b.w {
				r = hearth.RuleImport
			}
			b.to(max(b.w, min(bound, 0)), r)
		}
	}
	return b.w, b.rule
}

// binding is a power that limits bind in turn, and the first rule that
// moved it ("" while none has).
type binding struct {
	w    hearth.Watts
	rule hearth.Rule
}

// to moves the power to v, by rule r if no rule has moved it before.
func (b *binding) to(v hearth.Watts, r hearth.Rule) {
	if v != b.w {
		b.w = v
		if b.rule == "" {
			b.rule = r
		}
	}
}

// siteCaps binds the power to the site's own charge and discharge caps,
// with fixed (the power devices that take no share may hold) counted in.
func (b *binding) siteCaps(l Limits, fixed hearth.Watts) {
	if c := l.SiteMaxDischargeW; c != nil {
		b.to(min(b.w, *c-fixed), hearth.RuleSiteDischarge)
	}
	if c := l.SiteMaxChargeW; c != nil {
		b.to(max(b.w, -*c-fixed), hearth.RuleSiteCharge)
	}
}

// coincident reports whether the meter sample was taken after the last
// change of what the site commands: only then does it show the effect of
// that command, and can the headroom it gives be added to it.
func (dc *decider) coincident() bool {
	return dc.gridFresh() && (dc.prev.totalAt.IsZero() || dc.in.Grid.At.After(dc.prev.totalAt))
}

// exportBound is the most the site's batteries may discharge with export
// at the limit: from the meter when it is fresh, else from the inverters'
// own AC output (an upper bound on export, since the house load is not
// known), else nothing. A meter sample taken before the last change of
// command may lower the bound but not raise it above what is commanded:
// the meter has not seen that change yet.
func (dc *decider) exportBound(vs []*verdict) hearth.Watts {
	lim := *dc.lim.ExportLimitW
	if sum, ok := measuredSum(vs); ok && dc.gridFresh() {
		bound := sum + lim - dc.in.Grid.W
		if !dc.coincident() {
			bound = min(bound, max(dc.prev.lastTotal, 0))
		}
		return bound
	}
	var bound hearth.Watts = lim
	for _, v := range vs {
		ac, ok := point(v.obs.Reading, hearth.PointACPower)
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
// seen is the bound by the meter alone; bound also holds the charge at
// what is commanded until the meter has seen the last change.
func (dc *decider) importBound(vs []*verdict) (bound, seen hearth.Watts, ok bool) {
	sum, ok := measuredSum(vs)
	if !ok || !dc.gridFresh() {
		return 0, 0, false
	}
	seen = sum - dc.in.Grid.W - *dc.lim.ImportLimitW
	bound = seen
	if !dc.coincident() {
		bound = max(bound, min(dc.prev.lastTotal, 0))
	}
	return bound, seen, true
}

// capState is whether the export cap holds the site in auto, and since
// when export has been back under its limit.
type capState struct {
	on       bool
	clearFor time.Time
}

// autoExportCap decides, while the target is auto, whether export beyond
// its limit makes the agent cap the batteries' discharge, and to what. It
// engages when the meter shows export over the limit with the batteries
// discharging, and lets go when export has stayed under the limit, less a
// margin, for autoCapRelease. It returns the cap state to keep.
func (dc *decider) autoExportCap(vs []*verdict) (hearth.Watts, bool, capState) {
	in := dc.in
	keep := capState{dc.prev.autoCap, dc.prev.capClearFor}
	if dc.lim.ExportLimitW == nil || !dc.gridFresh() {
		return 0, false, capState{false, keep.clearFor}
	}
	lim := *dc.lim.ExportLimitW
	sum, ok := measuredSum(vs)
	if !ok {
		return 0, false, keep
	}
	cs := keep
	margin := max(100, 0.1*lim)
	switch {
	case !cs.on && in.Grid.W > lim && sum > 0:
		cs = capState{true, time.Time{}}
	case cs.on && in.Grid.W < lim-margin:
		if cs.clearFor.IsZero() {
			cs.clearFor = in.Now
		}
		if in.Now.Sub(cs.clearFor) >= autoCapRelease {
			cs.on = false
		}
	case cs.on:
		cs.clearFor = time.Time{}
	}
	if !cs.on {
		return 0, false, cs
	}
	return max(dc.exportBound(vs), 0), true, cs
}

// autoCapRelease is how long export must stay under its limit before the
// agent hands the batteries back to their own logic.
const autoCapRelease = 30 * time.Second

func (dc *decider) gridFresh() bool {
	g := dc.in.Grid
	return g != nil && g.Quality == hearth.QualityGood && !g.At.IsZero() &&
		dc.in.Now.Sub(g.At) <= dc.lim.MaxReadingAge &&
		!math.IsNaN(float64(g.W)) && !math.IsInf(float64(g.W), 0) && math.Abs(float64(g.W)) < 1e6
}
