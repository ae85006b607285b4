package drivers

import (
	"github.com/hearth-energy/hearth"
)

// A decoded value is only as good as the device that sent it: a scale
// factor that changed, a register that wrapped, a firmware that reports
// 250 % SoC. Every point with a physical range is checked against it, and
// a value outside it carries quality out_of_range and no value, so the
// safety rules that need the point treat it as unknown.

// Range is the interval of values a point can physically take; the root
// package holds the one table of physical ranges.
type Range = hearth.Range

// BuiltinRange returns the physical range hearth gives a point by its
// name (hearth.PhysicalRange), and false for names it knows no range for.
func BuiltinRange(name string, ratingW float64) (Range, bool) {
	return hearth.PhysicalRange(name, ratingW)
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
