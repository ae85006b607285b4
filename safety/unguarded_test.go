package safety

import (
	"testing"

	"github.com/hearth-energy/hearth"
)

// A device with no timeout of its own is commanded at most its
// unguarded_max_w, charging and discharging, with the rule and the device
// named; the rest of the site's target goes to the others.
func TestUnguardedCap(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.UnguardedMaxW = map[string]hearth.Watts{"sungrow": 800}
	e, err := NewEvaluator(lim)
	if err != nil {
		t.Fatal(err)
	}
	ung := named(battery(t0, 50, nil), "sungrow")
	d := settle(e, Input{Now: t0, Target: power(3000), Devices: []Observation{ung}})
	if a := d.Commands[0]; a.Power() != 800 || d.Rule != hearth.RuleUnguardedMax || d.RuleDevice != "sungrow" || a.Rule() != hearth.RuleUnguardedMax {
		t.Errorf("3000 W on an unguarded device capped at 800 W: %s rule %q (command %q) device %q; want 800 W by %s on sungrow",
			a, d.Rule, a.Rule(), d.RuleDevice, hearth.RuleUnguardedMax)
	}
	d = settle(e, Input{Now: t0, Target: power(-3000), Devices: []Observation{ung}})
	if a := d.Commands[0]; a.Power() != -800 || d.Rule != hearth.RuleUnguardedMax {
		t.Errorf("-3000 W: %s rule %q, want -800 W by %s", a, d.Rule, hearth.RuleUnguardedMax)
	}
	// A guarded device beside it takes what the unguarded one may not.
	e2, _ := NewEvaluator(lim)
	d = settle(e2, Input{Now: t0, Target: power(3000), Devices: []Observation{ung, battery(t0, 50, nil)}})
	if d.Commands[0].Power() != 800 || d.Commands[1].Power() != 2200 || d.Rule != "" {
		t.Errorf("3000 W over sungrow (cap 800 W) and battery: %v rule %q; want 800 W and 2200 W, nothing bound", d.Commands, d.Rule)
	}
	// A SoC trip is tighter than the cap and wins.
	e3, _ := NewEvaluator(lim)
	d = settle(e3, Input{Now: t0, Target: power(3000), Devices: []Observation{named(battery(t0, 10, nil), "sungrow")}})
	if a := d.Commands[0]; a.Power() != 0 || d.Rule != hearth.RuleSoCMin {
		t.Errorf("at soc_min: %s rule %q, want 0 W by %s", a, d.Rule, hearth.RuleSoCMin)
	}
	if w, ok := lim.DeviceLimitW(hearth.RuleUnguardedMax, "sungrow"); !ok || w != 800 {
		t.Errorf("DeviceLimitW(unguarded_max_w, sungrow) = %v %v, want 800", w, ok)
	}
	if w, ok := lim.DeviceLimitW(hearth.RuleMaxDischarge, "sungrow"); !ok || w != 2500 {
		t.Errorf("DeviceLimitW(max_discharge_w) = %v %v, want 2500", w, ok)
	}
	bad := testLimits()
	bad.UnguardedMaxW = map[string]hearth.Watts{"sungrow": -1}
	if _, err := NewEvaluator(bad); err == nil {
		t.Error("a negative unguarded_max_w was accepted")
	}
}
