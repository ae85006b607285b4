package drivers

import (
	"math"
	"strings"

	"github.com/hearth-energy/hearth"
)

// A decoded value is only as good as the device that sent it: a scale
// factor that changed, a register that wrapped, a firmware that reports
// 250 % SoC. Every point with a physical range is checked against it, and
// a value outside it carries quality out_of_range and no value, so the
// safety rules that need the point treat it as unknown.

// FixedPowerBoundW bounds a power point (a name ending in _w) when the
// rating it should be judged against is unknown: no home battery, inverter
// or house connection comes near a megawatt, while garbage (a scale factor
// off by three or more, a word-swapped 32-bit value) lands beyond it.
const FixedPowerBoundW = 1e6

// PowerRatingFactor is how far beyond its rating a power point may read:
// ±2× the rating, which leaves room for a hybrid inverter whose AC side
// carries PV and battery together, and for PV oversizing.
const PowerRatingFactor = 2

// Range is the interval of values a point can physically take, bounds
// included.
type Range struct {
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
}

// Contains reports whether v lies in the range.
func (r Range) Contains(v float64) bool { return v >= r.Lo && v <= r.Hi }

// Built-in ranges by point name.
var (
	rangePct   = Range{0, 100}
	rangeCellV = Range{1.5, 5}
	rangeTempC = Range{-40, 120}
)

// BuiltinRange returns the physical range hearth gives a point by its
// name, and false for names it knows no range for:
//
//   - soc_pct, soh_pct, charge_state_pct: 0..100;
//   - cell_v_min, cell_v_max, cell_v_avg: 1.5..5 V (no lithium or lead
//     cell reads outside it);
//   - temperatures (a name holding "temp" with the unit _c at its end or
//     before a last part: temp_c, temp_sink_c, cell_temp_c_min): -40..120
//     °C. The unit alone is not enough: ac_v_c is phase C's voltage;
//   - power (any name ending in _w): ±2× ratingW when ratingW is above 0,
//     never wider than ±FixedPowerBoundW, which is the bound when the
//     rating is unknown.
func BuiltinRange(name string, ratingW float64) (Range, bool) {
	switch name {
	case "soc_pct", "soh_pct", "charge_state_pct":
		return rangePct, true
	case "cell_v_min", "cell_v_max", "cell_v_avg":
		return rangeCellV, true
	}
	if strings.Contains(name, "temp") && (strings.HasSuffix(name, "_c") || strings.Contains(name, "_c_")) {
		return rangeTempC, true
	}
	if strings.HasSuffix(name, "_w") {
		bound := FixedPowerBoundW
		if ratingW > 0 && !math.IsInf(ratingW, 0) {
			bound = min(PowerRatingFactor*ratingW, FixedPowerBoundW)
		}
		return Range{-bound, bound}, true
	}
	return Range{}, false
}

// plausible returns p, or out_of_range when it carries a value outside r.
func plausible(p hearth.Point, r Range, ok bool) hearth.Point {
	if ok && p.Good() && !r.Contains(p.Value) {
		return hearth.Q(hearth.QualityOutOfRange)
	}
	return p
}

// seenPoints remembers which points of one device have carried a value.
// A device does not lose a point while it runs: a point that has given
// values and then reads as the not-implemented sentinel (the point's own,
// or its scale factor's) is garbage, and is reported comm_error, so a rule
// that needs it holds the safe state instead of going unchecked. Only its
// owner's poll goroutine uses it.
type seenPoints map[string]bool

// vet records a good point and turns a lost one into comm_error.
func (s seenPoints) vet(name string, p hearth.Point) hearth.Point {
	switch {
	case p.Good():
		s[name] = true
	case p.Quality == hearth.QualityNotImplemented && s[name]:
		return hearth.Q(hearth.QualityCommError)
	}
	return p
}
