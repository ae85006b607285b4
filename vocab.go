package hearth

import (
	"math"
	"strings"
	"time"
)

// PointName names a point that a rule reads. Its field is unexported: the
// only point names there are the ones declared below, so a misspelt name
// is a compile error instead of a rule that never finds its point.
type PointName struct{ name string }

// String returns the point's name as readings carry it.
func (p PointName) String() string { return p.name }

// Point names the safety rules and the control loop read.
var (
	PointSoC      = PointName{"soc_pct"}
	PointPower    = PointName{"power_w"} // battery power, positive discharging
	PointCellVMin = PointName{"cell_v_min"}
	PointCellVMax = PointName{"cell_v_max"}
	PointTemp     = PointName{"temp_c"}
	PointACPower  = PointName{"ac_power_w"}
	// Cell temperatures (SunSpec 803–805, or a profile's points), the
	// battery's own DC voltage and current, and its charge status
	// (SunSpec ChaSt: 3 discharging, 4 charging).
	PointCellTempMin = PointName{"cell_temp_c_min"}
	PointCellTempMax = PointName{"cell_temp_c_max"}
	PointBatteryV    = PointName{"battery_v"}
	PointBatteryA    = PointName{"battery_a"}
	PointChargeState = PointName{"charge_state"}
)

// RulePoints lists every point name a rule reads.
var RulePoints = []PointName{
	PointSoC, PointPower, PointCellVMin, PointCellVMax, PointTemp, PointACPower,
	PointCellTempMin, PointCellTempMax, PointBatteryV, PointBatteryA, PointChargeState,
}

// Get returns the reading's point by its name.
func (r Reading) Get(name PointName) (Point, bool) {
	p, ok := r.Points[name.name]
	return p, ok
}

// Rule names a safety rule. A clamp, a trip, an ack reason and an event
// all name the rule by these strings, which are the config keys the rule
// comes from where there is one.
type Rule string

// Safety rules.
const (
	RuleEStop          Rule = "estop"           // the emergency-stop input is engaged
	RuleStale          Rule = "max_reading_age" // the device's latest reading is too old
	RuleReadingQuality Rule = "reading_quality" // a point a rule needs could not be read
	RuleDeviceDown     Rule = "device_down"     // the device cannot be read at all
	RuleSoCMin         Rule = "soc_min_pct"
	RuleSoCMax         Rule = "soc_max_pct"
	RuleMaxCharge      Rule = "max_charge_w"
	RuleMaxDischarge   Rule = "max_discharge_w"
	RuleRamp           Rule = "ramp_w_per_s"
	RuleCellVMin       Rule = "cell_v_min"
	RuleCellVMax       Rule = "cell_v_max"
	RuleTempMin        Rule = "temp_c_min"
	RuleTempMax        Rule = "temp_c_max"
	RuleExport         Rule = "export_limit_w"
	RuleImport         Rule = "import_limit_w"
	RuleSiteDischarge  Rule = "site_max_discharge_w"
	RuleSiteCharge     Rule = "site_max_charge_w"
	RuleMeter          Rule = "meter"           // self_consumption without a fresh meter reading
	RuleCellTempMax    Rule = "cell_temp_c_max" // the hottest cell above temp_c_max
	RuleChargeTemp     Rule = "charge_temp_c_min"
	RuleImplausible    Rule = "implausible" // the device contradicts itself
	RuleRelease        Rule = "release"     // control handed back on purpose
	// RuleUnguardedMax bounds the power commanded to a device with no
	// timeout of its own (devices[].unguarded_max_w): what it may hold if
	// the agent dies mid-lease.
	RuleUnguardedMax Rule = "unguarded_max_w"
)

// Limit reports whether the rule is a limit that binds power (reported by
// clamped events) rather than a trip that holds a device in its safe state.
func (r Rule) Limit() bool {
	switch r {
	case RuleMaxCharge, RuleMaxDischarge, RuleExport, RuleImport, RuleSiteDischarge, RuleSiteCharge, RuleUnguardedMax:
		return true
	}
	return false
}

// EventType names an event the agent records.
type EventType string

// Event types. docs/events.md documents each, and docs/schemas/events its
// data.
const (
	EventLeaseStarted     EventType = "lease_started"
	EventLeaseEnded       EventType = "lease_ended"
	EventSetpointRejected EventType = "setpoint_rejected"
	EventKeysReloaded     EventType = "keys_reloaded"
	EventVersionReset     EventType = "version_reset"
	EventClamped          EventType = "clamped"
	EventTrip             EventType = "trip"
	EventTripCleared      EventType = "trip_cleared"
	EventNotEffective     EventType = "not_effective"
	EventEffective        EventType = "effective" // a device that did not follow does again
	EventWriteFailed      EventType = "write_failed"
	EventClockStepped     EventType = "clock_stepped"
	// EventClockFloorDistrusted: the floor under true time was far ahead of
	// every other source and was dropped; EventClockFloorReset: it was set
	// back by hand (hearth clock reset-floor).
	EventClockFloorDistrusted EventType = "clock_floor_distrusted"
	EventClockFloorReset      EventType = "clock_floor_reset"
	EventDeviceDown           EventType = "device_down"
	EventDeviceUp             EventType = "device_up"
	EventUplinkConnected      EventType = "uplink_connected"
	EventUplinkLost           EventType = "uplink_lost"
	EventGap                  EventType = "gap"
	EventEventsDropped        EventType = "events_dropped"
	EventDiskFull             EventType = "disk_full"
	EventBufferCorrupt        EventType = "buffer_corrupt"
)

// EventTypes is the catalogue of event types, in the order docs/events.md
// lists them.
var EventTypes = []EventType{
	EventLeaseStarted, EventLeaseEnded, EventSetpointRejected, EventKeysReloaded, EventVersionReset,
	EventClamped, EventTrip, EventTripCleared, EventNotEffective, EventEffective, EventWriteFailed,
	EventClockStepped, EventClockFloorDistrusted, EventClockFloorReset,
	EventDeviceDown, EventDeviceUp,
	EventUplinkConnected, EventUplinkLost,
	EventGap, EventEventsDropped, EventDiskFull, EventBufferCorrupt,
}

// Range is the interval of values a point can physically take, bounds
// included.
type Range struct {
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
}

// Contains reports whether v lies in the range.
func (r Range) Contains(v float64) bool { return v >= r.Lo && v <= r.Hi }

// FixedPowerBoundW bounds a power point (a name ending in _w) when the
// rating it should be judged against is unknown: no home battery, inverter
// or house connection comes near a megawatt, while garbage (a scale factor
// off by three or more, a word-swapped 32-bit value) lands beyond it.
const FixedPowerBoundW = 1e6

// PowerRatingFactor is how far beyond its rating a power point may read:
// ±2× the rating, which leaves room for a hybrid inverter whose AC side
// carries PV and battery together, and for PV oversizing.
const PowerRatingFactor = 2

// physical is the one table of physical ranges by point name; PhysicalRange
// adds the ranges that follow from a name's unit.
var physical = map[string]Range{
	"soc_pct": {0, 100}, "soh_pct": {0, 100}, "charge_state_pct": {0, 100},
	"cell_v_min": {1.5, 5}, "cell_v_max": {1.5, 5}, "cell_v_avg": {1.5, 5},
	PointBatteryV.name: {0, 2000},
	PointBatteryA.name: {-5000, 5000},
}

var rangeTempC = Range{-40, 120}

// connectionPoint reports whether a power point measures the grid
// connection rather than the device's own conversion.
func connectionPoint(name string) bool {
	return strings.HasPrefix(name, "grid_") || strings.HasPrefix(name, "meter_") || strings.Contains(name, "_grid_")
}

// PhysicalRange returns the range a point can physically take, by its
// name, and false for names with no known range. A value outside is not a
// reading but a fault (a wrong scale factor, a sentinel read as a number).
//
//   - soc_pct, soh_pct, charge_state_pct: 0..100;
//   - cell_v_min, cell_v_max, cell_v_avg: 1.5..5 V (no lithium or lead
//     cell reads outside it);
//   - battery_v 0..2000 V, battery_a ±5000 A;
//   - temperatures (a name holding "temp" with the unit _c at its end or
//     before a last part: temp_c, temp_sink_c, cell_temp_c_min): -40..120
//     °C. The unit alone is not enough: ac_v_c is phase C's voltage;
//   - power (any name ending in _w): ±2× ratingW when ratingW is above 0,
//     never wider than ±FixedPowerBoundW, which is the bound when the
//     rating is unknown. A grid or meter point (a name starting grid_ or
//     meter_, or holding _grid_) reads the house connection, which the
//     inverter's rating does not bound: ±FixedPowerBoundW.
func PhysicalRange(name string, ratingW float64) (Range, bool) {
	if r, ok := physical[name]; ok {
		return r, true
	}
	if strings.Contains(name, "temp") && (strings.HasSuffix(name, "_c") || strings.Contains(name, "_c_")) {
		return rangeTempC, true
	}
	if strings.HasSuffix(name, "_w") {
		bound := FixedPowerBoundW
		if ratingW > 0 && !math.IsInf(ratingW, 0) && !connectionPoint(name) {
			bound = min(PowerRatingFactor*ratingW, FixedPowerBoundW)
		}
		return Range{-bound, bound}, true
	}
	return Range{}, false
}

// Clock reads the gateway's clocks and makes timers that run on them. The
// packages that act on time take one, so that tests can drive them.
type Clock interface {
	Now() Instant
	NewTimer(d time.Duration) Timer
	NewTicker(d time.Duration) Ticker
}

// Timer fires once on C after its duration, as time.Timer does.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker fires on C every period, as time.Ticker does.
type Ticker interface {
	C() <-chan time.Time
	Stop()
	Reset(d time.Duration)
}

// NowFunc is a Clock whose instants come from the function and whose
// timers are the runtime's.
type NowFunc func() Instant

// Now calls f.
func (f NowFunc) Now() Instant { return f() }

// NewTimer returns a runtime timer.
func (NowFunc) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

// NewTicker returns a runtime ticker.
func (NowFunc) NewTicker(d time.Duration) Ticker { return sysTicker{time.NewTicker(d)} }

// SystemClock returns the runtime's clocks, the monotonic one counted from
// this call.
func SystemClock() Clock {
	origin := time.Now()
	return NowFunc(func() Instant {
		t := time.Now()
		return Instant{Wall: t.Round(0), Mono: t.Sub(origin)}
	})
}

type sysTimer struct{ t *time.Timer }

func (s sysTimer) C() <-chan time.Time        { return s.t.C }
func (s sysTimer) Stop() bool                 { return s.t.Stop() }
func (s sysTimer) Reset(d time.Duration) bool { return s.t.Reset(d) }

type sysTicker struct{ t *time.Ticker }

func (s sysTicker) C() <-chan time.Time   { return s.t.C }
func (s sysTicker) Stop()                 { s.t.Stop() }
func (s sysTicker) Reset(d time.Duration) { s.t.Reset(d) }
