package safety

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hearth-energy/hearth"
)

// Rule names. A clamp, a trip, an ack reason and an event all name the rule
// by these strings, which are the config keys the rule comes from where
// there is one.
const (
	RuleEStop          = "estop"           // the emergency-stop input is engaged
	RuleStale          = "max_reading_age" // the device's latest reading is too old
	RuleReadingQuality = "reading_quality" // a point a rule needs could not be read
	RuleSoCMin         = "soc_min_pct"
	RuleSoCMax         = "soc_max_pct"
	RuleMaxCharge      = "max_charge_w"
	RuleMaxDischarge   = "max_discharge_w"
	RuleRamp           = "ramp_w_per_s"
	RuleCellVMin       = "cell_v_min"
	RuleCellVMax       = "cell_v_max"
	RuleTempMin        = "temp_c_min"
	RuleTempMax        = "temp_c_max"
	RuleExport         = "export_limit_w"
	RuleMeter          = "meter" // self_consumption without a fresh meter reading
)

// Point names the evaluator reads from a controllable device's reading.
const (
	PointSoC      = "soc_pct"
	PointPower    = "power_w"
	PointCellVMin = "cell_v_min"
	PointCellVMax = "cell_v_max"
	PointTemp     = "temp_c"
	PointACPower  = "ac_power_w"
)

// Defaults for the hysteresis bands and the clock skew, used by the agent
// where the config is silent.
const (
	DefaultSoCHysteresisPct = 2
	DefaultCellVHysteresis  = 0.05
	DefaultTempHysteresisC  = 2
	DefaultClockSkew        = 30 * time.Second
)

// Limits are the local limits that hold whatever the cloud says. Powers
// are positive magnitudes.
type Limits struct {
	SoCMinPct        float64 // no discharge at or below
	SoCMaxPct        float64 // no charge at or above
	SoCHysteresisPct float64 // a SoC trip clears this far inside the window
	MaxChargeW       hearth.Watts
	MaxDischargeW    hearth.Watts
	RampWPerS        float64       // fastest move of commanded power away from zero
	MaxReadingAge    time.Duration // older readings force the safe state
	CellVMin         float64
	CellVMax         float64
	CellVHysteresis  float64
	TempCMin         float64
	TempCMax         float64
	TempHysteresisC  float64
	// ExportLimitW bounds site export; nil means no limit.
	ExportLimitW *hearth.Watts
	MaxLease     time.Duration // longest lease accepted
	ClockSkew    time.Duration // how far issued_at may be ahead of the clock
	Fallback     hearth.Mode   // what runs with no lease: auto or idle
}

// Validate reports every inconsistent limit.
func (l Limits) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"soc_min_pct", l.SoCMinPct}, {"soc_max_pct", l.SoCMaxPct}, {"soc_hysteresis_pct", l.SoCHysteresisPct},
		{"max_charge_w", float64(l.MaxChargeW)}, {"max_discharge_w", float64(l.MaxDischargeW)},
		{"ramp_w_per_s", l.RampWPerS}, {"cell_v_min", l.CellVMin}, {"cell_v_max", l.CellVMax},
		{"cell_v_hysteresis", l.CellVHysteresis}, {"temp_c_min", l.TempCMin}, {"temp_c_max", l.TempCMax},
		{"temp_hysteresis_c", l.TempHysteresisC},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			bad("%s must be finite", f.name)
		}
	}
	if l.SoCMinPct < 0 || l.SoCMaxPct > 100 || l.SoCMinPct >= l.SoCMaxPct {
		bad("soc window %g..%g is not inside 0..100", l.SoCMinPct, l.SoCMaxPct)
	}
	if l.SoCHysteresisPct < 0 || l.CellVHysteresis < 0 || l.TempHysteresisC < 0 {
		bad("hysteresis must not be negative")
	}
	if l.MaxChargeW < 0 || l.MaxDischargeW < 0 {
		bad("power limits must not be negative")
	}
	if l.RampWPerS <= 0 {
		bad("ramp_w_per_s must be above 0")
	}
	if l.CellVMin >= l.CellVMax {
		bad("cell voltage window %g..%g is empty", l.CellVMin, l.CellVMax)
	}
	if l.TempCMin >= l.TempCMax {
		bad("temperature window %g..%g is empty", l.TempCMin, l.TempCMax)
	}
	if l.ExportLimitW != nil && (*l.ExportLimitW < 0 || math.IsNaN(float64(*l.ExportLimitW))) {
		bad("export_limit_w must not be negative")
	}
	if l.MaxReadingAge <= 0 || l.MaxLease <= 0 || l.ClockSkew < 0 {
		bad("max_reading_age and max_lease must be above 0, clock skew not negative")
	}
	if l.Fallback != hearth.ModeAuto && l.Fallback != hearth.ModeIdle {
		bad("fallback %q is not auto or idle", l.Fallback)
	}
	return errors.Join(errs...)
}
