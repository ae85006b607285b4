package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/safety"
)

// Bounds on the safety and timing keys. Outside them the control loop
// flaps (a trip clears and trips again, a reading goes stale between two
// polls, a command is judged before the device could follow it) or a
// limit means nothing (it can never bind, or it shuts a protection off).
// They are errors, unlike the warnings, which are settings a careful
// installer may still choose. docs/safety.md lists them.
const (
	// minSoCHysteresisPct: most devices report SoC in whole percent, so a
	// band below one step clears on the next step and trips again.
	minSoCHysteresisPct = 1
	// A reading may be late by one poll interval and one fully retried
	// request before it is stale: max_reading_age covers stalePolls poll
	// intervals plus (retries+1) timeouts of every device.
	stalePolls = 2
	// maxReadingAgeBound: past it, a device that stops answering is not
	// noticed for longer than any revert timer a device is asked to keep.
	maxReadingAgeBound = 10 * time.Minute
	// effective_within gives a device at least effectivePolls poll
	// intervals to show that it follows a command, and at most
	// maxEffectiveWithin, past which a device doing the opposite of its
	// command is never held to account.
	effectivePolls     = 2
	maxEffectiveWithin = 5 * time.Minute
	// clock_skew: below a second, a cloud clock a few milliseconds ahead
	// has every lease refused; above ten minutes, a lease issued far in the
	// future passes, and with it what it claims the time is.
	minClockSkew = time.Second
	maxClockSkew = 10 * time.Minute
	// max_lease: shorter than a minute, no lease outlives a few polls;
	// longer than 30 days, a cloud that went away rules the battery for a
	// month (beyond 7 days is already a warning).
	minMaxLease = time.Minute
	maxMaxLease = 30 * 24 * time.Hour
	// minRampWPerS: a slower ramp takes hours to reach a few kilowatts.
	minRampWPerS = 1
	// maxBootDelay: the random delay before the first connect spreads a
	// fleet's reconnects after an outage (minutes are usual); beyond a
	// day, a gateway may stay off the cloud for days after a start.
	maxBootDelay = 24 * time.Hour
)

// bounds checks the safety and timing keys against the bounds above, and
// against the physical range of the readings each limit is compared with
// (hearth.PhysicalRange): a limit no reading can reach never binds. A key
// another check has already reported is not reported again.
func (v *validator) bounds(c *Config) {
	s := c.Safety
	v.physical("safety.cell_v_min", s.CellVMin, hearth.PointCellVMin)
	v.physical("safety.cell_v_max", s.CellVMax, hearth.PointCellVMax)
	v.physical("safety.temp_c_min", s.TempCMin, hearth.PointTemp)
	v.physical("safety.temp_c_max", s.TempCMax, hearth.PointTemp)
	v.physical("safety.charge_temp_c_min", s.ChargeTempCMin, hearth.PointCellTempMin)
	powers := []struct {
		key string
		w   *float64
	}{{"max_charge_w", &s.MaxChargeW}, {"max_discharge_w", &s.MaxDischargeW}, {"export_limit_w", s.ExportLimitW},
		{"import_limit_w", s.ImportLimitW}, {"site_max_discharge_w", s.SiteMaxDischargeW}, {"site_max_charge_w", s.SiteMaxChargeW}}
	for _, p := range powers {
		if p.w != nil && *p.w > hearth.FixedPowerBoundW && !v.reported("safety."+p.key) {
			v.errorf("safety."+p.key, "%.0f W is beyond what any power reading can show (%.0f W): the limit could never bind; the unit is watts", *p.w, hearth.FixedPowerBoundW)
		}
	}

	// Windows: a trip at one end must clear before the other end trips.
	if h := s.SocHysteresisPct; !v.reported("safety.soc_hysteresis_pct") && !v.reported("safety.soc_min_pct") && !v.reported("safety.soc_max_pct") {
		switch window := s.SocMaxPct - s.SocMinPct; {
		case h < minSoCHysteresisPct:
			v.errorf("safety.soc_hysteresis_pct", "%g is below %d: devices report SoC in whole percent, so a SoC trip would clear at the next step and trip again", h, minSoCHysteresisPct)
		case 2*h >= window:
			v.errorf("safety.soc_hysteresis_pct", "%g is not below half the SoC window (soc_min_pct %g to soc_max_pct %g): a trip at one end would clear inside the other's", h, s.SocMinPct, s.SocMaxPct)
		}
	}
	v.window("safety.cell_v_min", "cell_v_max", s.CellVMin, s.CellVMax, safety.DefaultCellVHysteresis, "V")
	v.window("safety.temp_c_min", "temp_c_max", s.TempCMin, s.TempCMax, safety.DefaultTempHysteresisC, "°C")
	if !v.reported("safety.charge_temp_c_min") && !v.reported("safety.temp_c_max") && s.ChargeTempCMin+safety.DefaultTempHysteresisC >= s.TempCMax {
		v.errorf("safety.charge_temp_c_min", "%g °C leaves no temperature at which the battery may charge: keep it more than %g °C (its hysteresis) below temp_c_max (%g °C)", s.ChargeTempCMin, float64(safety.DefaultTempHysteresisC), s.TempCMax)
	}
	if r := s.RampWPerS; r > 0 && r < minRampWPerS && !v.reported("safety.ramp_w_per_s") {
		v.errorf("safety.ramp_w_per_s", "%g is below %d W/s: a command would take hours to reach a few kilowatts", r, minRampWPerS)
	}

	// Times.
	v.between("safety.clock_skew", s.ClockSkew.D(), minClockSkew, maxClockSkew,
		"below it a cloud clock a little ahead has every lease refused; above it a lease issued far in the future passes")
	v.between("safety.max_lease", s.MaxLease.D(), minMaxLease, maxMaxLease,
		"shorter, no lease outlives a few polls; longer, a cloud that went away rules the battery for over a month")
	if age := s.MaxReadingAge.D(); age > maxReadingAgeBound && !v.reported("safety.max_reading_age") {
		v.errorf("safety.max_reading_age", "%s is above %s: a device that stops answering would go unnoticed that long", shortDuration(s.MaxReadingAge.D()), shortDuration(maxReadingAgeBound))
	}
	if ew := s.EffectiveWithin.D(); ew > maxEffectiveWithin && !v.reported("safety.effective_within") {
		v.errorf("safety.effective_within", "%s is above %s: a device doing the opposite of its command would never be held to account", shortDuration(s.EffectiveWithin.D()), shortDuration(maxEffectiveWithin))
	}
	for i, d := range c.Devices {
		v.pollBounds(fmt.Sprintf("devices[%d]", i), d, s)
	}
	v.between("uplink.boot_delay", c.Uplink.BootDelay.D(), 0, maxBootDelay,
		"longer, the gateway may stay off the cloud for days after a start")
}

// pollBounds checks max_reading_age and effective_within against one
// device's poll interval, timeout and retries. The error goes on the
// safety key's line when the file sets it, else on the device's.
func (v *validator) pollBounds(p string, d DeviceConfig, s SafetyConfig) {
	if v.reported(p+".poll_interval") || v.reported(p+".timeout") || v.reported(p+".retries") {
		return
	}
	poll := d.PollInterval.D()
	if age := s.MaxReadingAge.D(); age > 0 && !v.reported("safety.max_reading_age") {
		need := stalePolls*poll + time.Duration(d.Retries+1)*d.Timeout.D()
		if age < need {
			why := fmt.Sprintf("%d×poll_interval (%s) + (retries+1)×timeout (%d×%s) = %s, or readings go stale between polls and the safe state trips and clears by turns",
				stalePolls, shortDuration(poll), d.Retries+1, shortDuration(d.Timeout.D()), shortDuration(need))
			v.crossf("safety.max_reading_age", p+".poll_interval",
				fmt.Sprintf("%s is below what device %s needs: %s", shortDuration(age), d.Name, why),
				fmt.Sprintf("%s needs safety.max_reading_age (%s, the default) of at least %s", shortDuration(poll), shortDuration(age), why))
		}
	}
	if ew := s.EffectiveWithin.D(); ew > 0 && !v.reported("safety.effective_within") {
		if need := effectivePolls * poll; ew < need {
			why := fmt.Sprintf("%d×poll_interval of device %s (%s): a command would be judged before a reading could show it followed", effectivePolls, d.Name, shortDuration(need))
			v.crossf("safety.effective_within", p+".poll_interval",
				fmt.Sprintf("%s is below %s", shortDuration(ew), why),
				fmt.Sprintf("%s needs safety.effective_within (%s, the default) of at least %s", shortDuration(poll), shortDuration(ew), why))
		}
	}
}

// physical reports a limit outside the physical range of the point it is
// compared with.
func (v *validator) physical(key string, x float64, point hearth.PointName) {
	r, ok := hearth.PhysicalRange(point.String(), 0)
	if !ok || v.reported(key) || r.Contains(x) {
		return
	}
	v.errorf(key, "%g is outside what a %s reading can be (%g..%g): the limit would never bind, or always", x, point, r.Lo, r.Hi)
}

// window reports a lo..hi window narrower than two hysteresis bands: a
// trip at one end would clear inside the other's trip.
func (v *validator) window(loKey, hiKey string, lo, hi, hyst float64, unit string) {
	hiPath := "safety." + hiKey
	if v.reported(loKey) || v.reported(hiPath) || lo >= hi || hi-lo > 2*hyst {
		return
	}
	v.errorf(loKey, "%g..%g %s is not wider than twice the hysteresis (%g %s): a trip at one end would clear inside the other's", lo, hi, unit, hyst, unit)
}

// between reports a duration outside lo..hi, and why.
func (v *validator) between(key string, d, lo, hi time.Duration, why string) {
	if v.reported(key) || (d >= lo && d <= hi) {
		return
	}
	v.errorf(key, "%s is outside %s..%s: %s", shortDuration(d), shortDuration(lo), shortDuration(hi), why)
}

// crossf reports a problem between two keys: msg on the line of key when
// the file sets it, else otherMsg on the line of other (or of its nearest
// parent that the file has).
func (v *validator) crossf(key, other, msg, otherMsg string) {
	if _, ok := v.lines[key]; ok {
		v.errorf(key, "%s", msg)
		return
	}
	v.errorf(other, "%s", otherMsg)
}

// reported says whether an error is already recorded for path.
func (v *validator) reported(path string) bool {
	for _, e := range v.errs {
		if strings.HasPrefix(e.Msg, path+": ") {
			return true
		}
	}
	return false
}

// shortDuration writes 720h0m0s as 720h and 10m0s as 10m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
