package drivers

import (
	"testing"

	"github.com/hearth-energy/hearth"
)

// Every point a safety rule reads is one the SunSpec driver produces under
// that very name: a name that drifts on either side would leave a rule
// that never finds its point.
func TestSunSpecGivesEveryRulePoint(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, m := range sunspecMap {
		names[m.name] = true
	}
	for _, p := range hearth.RulePoints {
		if !names[p.String()] {
			t.Errorf("rule point %q: no SunSpec model gives it", p)
		}
	}
}
