package safety

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/hearth-energy/hearth"
)

// Defaults for the hysteresis bands and the clock skew, used by the agent
// where the config is silent.
const (
	DefaultSoCHysteresisPct = 2
	DefaultCellVHysteresis  = 0.05
	DefaultTempHysteresisC  = 2
	DefaultClockSkew        = 30 * time.Second
	// DefaultChargeTempCMin: lithium cells are not charged at or below
	// freezing.
	DefaultChargeTempCMin = 0
	// DefaultEffectiveWithin is how long a device may take to follow a
	// command before what it reports is held against it.
	DefaultEffectiveWithin = 15 * time.Second
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
	// ChargeTempCMin: no charging while the coldest cell is at or below.
	ChargeTempCMin float64
	// ExportLimitW bounds site export (by the meter); ImportLimitW site
	// import; SiteMaxDischargeW and SiteMaxChargeW the sum over every
	// device. nil means no limit. The per-device limits above apply to
	// each device on its own.
	ExportLimitW      *hearth.Watts
	ImportLimitW      *hearth.Watts
	SiteMaxDischargeW *hearth.Watts
	SiteMaxChargeW    *hearth.Watts
	// UnguardedMaxW bounds, by device name, the power a device with no
	// timeout of its own is commanded, charging and discharging alike
	// (devices[].unguarded_max_w, rule unguarded_max_w): the most such a
	// battery holds if the agent dies mid-lease. A device not named has no
	// such bound.
	UnguardedMaxW map[string]hearth.Watts
	// EffectiveWithin is how long a device may take to follow a command
	// before a response of the wrong sign counts against it; zero takes
	// DefaultEffectiveWithin.
	EffectiveWithin time.Duration
	MaxLease        time.Duration // longest lease accepted
	ClockSkew       time.Duration // how far issued_at may be ahead of the clock
	Fallback        hearth.Mode   // what runs with no lease: auto or idle
}

// Validate reports every inconsistent limit, each as a hearth.FieldError
// named by the config key under safety: (the hysteresis bands the config
// does not expose are named as fields here).
func (l Limits) Validate() error {
	var errs hearth.FieldErrors
	finite := func(key string, x float64) bool {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			errs.Add(key, "must be a finite number")
			return false
		}
		return true
	}
	pctOK := true
	for _, f := range []struct {
		key string
		v   float64
	}{{"soc_min_pct", l.SoCMinPct}, {"soc_max_pct", l.SoCMaxPct}} {
		if !finite(f.key, f.v) {
			pctOK = false
		} else if f.v < 0 || f.v > 100 {
			errs.Add(f.key, "%g is outside 0..100", f.v)
		}
	}
	if pctOK && l.SoCMinPct >= l.SoCMaxPct {
		errs.Add("soc_min_pct", "%g must be below soc_max_pct (%g)", l.SoCMinPct, l.SoCMaxPct)
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"max_charge_w", float64(l.MaxChargeW)}, {"max_discharge_w", float64(l.MaxDischargeW)}, {"ramp_w_per_s", l.RampWPerS}} {
		if finite(f.key, f.v) && f.v < 0 {
			errs.Add(f.key, "%g must not be negative", f.v)
		}
	}
	if l.RampWPerS == 0 {
		errs.Add("ramp_w_per_s", "must be above 0")
	}
	if finite("cell_v_min", l.CellVMin) && finite("cell_v_max", l.CellVMax) && l.CellVMin >= l.CellVMax {
		errs.Add("cell_v_min", "%g must be below cell_v_max (%g)", l.CellVMin, l.CellVMax)
	}
	if finite("temp_c_min", l.TempCMin) && finite("temp_c_max", l.TempCMax) && l.TempCMin >= l.TempCMax {
		errs.Add("temp_c_min", "%g must be below temp_c_max (%g)", l.TempCMin, l.TempCMax)
	}
	for _, f := range []struct {
		key string
		v   *hearth.Watts
	}{{"export_limit_w", l.ExportLimitW}, {"import_limit_w", l.ImportLimitW}, {"site_max_discharge_w", l.SiteMaxDischargeW}, {"site_max_charge_w", l.SiteMaxChargeW}} {
		if f.v != nil && finite(f.key, float64(*f.v)) && *f.v < 0 {
			errs.Add(f.key, "%g must not be negative", float64(*f.v))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(l.UnguardedMaxW)) {
		if w := float64(l.UnguardedMaxW[name]); finite("unguarded_max_w", w) && w < 0 {
			errs.Add("unguarded_max_w", "%s: %g must not be negative", name, w)
		}
	}
	finite("charge_temp_c_min", l.ChargeTempCMin)
	if l.MaxReadingAge <= 0 {
		errs.Add("max_reading_age", "must be above 0")
	}
	if l.MaxLease <= 0 {
		errs.Add("max_lease", "must be above 0")
	}
	switch l.Fallback {
	case hearth.ModeAuto, hearth.ModeIdle:
	default:
		errs.Add("fallback", "%q is not one of auto, idle", l.Fallback)
	}
	h := l.SoCHysteresisPct
	if h < 0 || math.IsNaN(h) || (l.SoCMinPct < l.SoCMaxPct && h >= l.SoCMaxPct-l.SoCMinPct) {
		errs.Add("soc_hysteresis_pct", "%g must be at least 0 and below the SoC window", h)
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"cell_v_hysteresis", l.CellVHysteresis}, {"temp_hysteresis_c", l.TempHysteresisC}} {
		if finite(f.key, f.v) && f.v < 0 {
			errs.Add(f.key, "%g must not be negative", f.v)
		}
	}
	if l.ClockSkew < 0 {
		errs.Add("clock_skew", "must not be negative")
	}
	return errs.Err()
}

// DeviceLimitW returns the configured power limit a rule that bound
// device stands for (for unguarded_max_w, that device's own bound), and
// false for a rule that is not a power limit or a limit not set.
func (l Limits) DeviceLimitW(r hearth.Rule, device string) (hearth.Watts, bool) {
	var w *hearth.Watts
	switch r {
	case hearth.RuleMaxCharge:
		w = &l.MaxChargeW
	case hearth.RuleMaxDischarge:
		w = &l.MaxDischargeW
	case hearth.RuleExport:
		w = l.ExportLimitW
	case hearth.RuleImport:
		w = l.ImportLimitW
	case hearth.RuleSiteDischarge:
		w = l.SiteMaxDischargeW
	case hearth.RuleSiteCharge:
		w = l.SiteMaxChargeW
	case hearth.RuleUnguardedMax:
		u, ok := l.UnguardedMaxW[device]
		return u, ok
	}
	if w == nil {
		return 0, false
	}
	return *w, true
}
