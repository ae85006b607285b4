// Package hearth holds the domain vocabulary of the hearth gateway agent:
// readings and their points, data quality, setpoint leases, power and its
// sign convention. Every other package speaks in these types; none of them
// is tied to Modbus, MQTT or SQLite.
package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the agent's version, stamped at build time with
// -ldflags "-X github.com/hearth-energy/hearth.Version=…".
var Version = "dev"

// BuildDate is when the sources of this binary were committed, RFC 3339,
// stamped with -ldflags "-X github.com/hearth-energy/hearth.BuildDate=…";
// empty falls back to the commit time Go records in the build info, then
// to the binary file's time (hw.BuildStamp).
var BuildDate = ""

// Instant is one reading of the gateway's two clocks. Wall is the wall
// clock (what NTP, an RTC or a person sets, and what can jump); Mono is the
// monotonic clock since an origin fixed for the life of the process, which
// nothing steps. Durations are measured on Mono; comparisons with times
// from elsewhere (valid_until, issued_at) are made on Wall, and only when
// the wall clock can be trusted.
type Instant struct {
	Wall time.Time     // without a monotonic reading
	Mono time.Duration // since the process's clock origin
}

// Sub returns the monotonic time from j to i.
func (i Instant) Sub(j Instant) time.Duration { return i.Mono - j.Mono }

// Add returns i moved by d on both clocks.
func (i Instant) Add(d time.Duration) Instant { return Instant{Wall: i.Wall.Add(d), Mono: i.Mono + d} }

// Watts is electrical power. The sign convention holds everywhere in hearth:
// positive is discharging the battery or exporting to the grid, negative is
// charging or importing.
type Watts float64

// Quality says why a point carries no value. The zero value, QualityGood,
// means the point has a value.
type Quality string

// Point qualities. Missing is not zero: a point that could not be read has
// a quality and no value.
const (
	QualityGood           Quality = ""
	QualityCommError      Quality = "comm_error"      // the device did not answer or answered garbage
	QualityNotImplemented Quality = "not_implemented" // the device reports the point as absent (SunSpec sentinel)
	QualityOutOfRange     Quality = "out_of_range"    // decoded, but outside what the point can physically be
	QualityStale          Quality = "stale"           // last value is older than allowed
)

// Point is one measured quantity. Exactly one of Value (with QualityGood)
// or a non-good Quality is meaningful.
type Point struct {
	Value   float64
	Quality Quality
}

// Good reports whether the point carries a value.
func (p Point) Good() bool { return p.Quality == QualityGood }

// V returns a point with a value.
func V(v float64) Point { return Point{Value: v} }

// Q returns a point without a value, for the given reason.
func Q(q Quality) Point { return Point{Quality: q} }

type pointJSON struct {
	V *float64 `json:"v,omitempty"`
	Q Quality  `json:"q,omitempty"`
}

// MarshalJSON encodes a point as {"v":…} or {"q":…}. A non-finite value,
// which JSON cannot carry, is encoded as out_of_range.
func (p Point) MarshalJSON() ([]byte, error) {
	if p.Quality != QualityGood {
		return json.Marshal(pointJSON{Q: p.Quality})
	}
	if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		return json.Marshal(pointJSON{Q: QualityOutOfRange})
	}
	v := p.Value
	return json.Marshal(pointJSON{V: &v})
}

// UnmarshalJSON decodes {"v":…} or {"q":…}.
func (p *Point) UnmarshalJSON(b []byte) error {
	var j pointJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	switch {
	case j.V != nil && j.Q != "":
		return errors.New("point has both v and q")
	case j.V != nil:
		*p = Point{Value: *j.V}
	case j.Q != "":
		*p = Point{Quality: j.Q}
	default:
		return errors.New("point has neither v nor q")
	}
	return nil
}

// ClockState says whether the wall clock was trustworthy when a reading was
// taken.
type ClockState string

// Clock states.
const (
	ClockSynced   ClockState = "synced"
	ClockUnsynced ClockState = "unsynced"
)

// Reading is one poll of one device. Seq is assigned by the buffer when the
// reading is stored, and is strictly increasing per gateway across restarts.
type Reading struct {
	Seq    uint64           `json:"seq"`
	Device string           `json:"device"`
	Time   time.Time        `json:"ts"`
	Clock  ClockState       `json:"clock"`
	Boot   string           `json:"boot"`
	MonoMS int64            `json:"mono_ms"`
	Points map[string]Point `json:"points"`
}

// PointNames returns the reading's point names in sorted order.
func (r Reading) PointNames() []string {
	names := make([]string, 0, len(r.Points))
	for n := range r.Points {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Mode is what a device is asked to do.
type Mode string

// Control modes.
const (
	ModePower           Mode = "power"            // hold a fixed power
	ModeIdle            Mode = "idle"             // hold 0 W
	ModeAuto            Mode = "auto"             // hand control back to the device's own logic
	ModeSelfConsumption Mode = "self_consumption" // keep grid power near zero using a meter
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool {
	switch m {
	case ModePower, ModeIdle, ModeAuto, ModeSelfConsumption:
		return true
	}
	return false
}

// ScheduleEntry is one slot of a lease's schedule.
type ScheduleEntry struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Mode   Mode      `json:"mode"`
	PowerW *Watts    `json:"power_w,omitempty"`
}

// Setpoint is a lease from the cloud: hold Mode (and PowerW) until
// ValidUntil, then take Fallback. A setpoint is never a bare command.
type Setpoint struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	// Gateway names the gateway the lease is for; required when setpoints
	// are signed, so that an envelope for one gateway cannot be replayed to
	// another that trusts the same key.
	Gateway    string          `json:"gateway,omitempty"`
	IssuedAt   time.Time       `json:"issued_at"`
	ValidUntil time.Time       `json:"valid_until"`
	Mode       Mode            `json:"mode"`
	PowerW     *Watts          `json:"power_w,omitempty"`
	Schedule   []ScheduleEntry `json:"schedule,omitempty"`
	Fallback   Mode            `json:"fallback"`
	// KeyID is the id of the key whose signature the receiver verified,
	// "" for an unsigned lease. It is set by the receiver from the
	// envelope, never read from the payload.
	KeyID string `json:"key_id,omitempty"`
}

// Result is the outcome of a setpoint, as acked to the cloud.
type Result string

// Setpoint results.
const (
	ResultApplied   Result = "applied"
	ResultClamped   Result = "clamped"
	ResultRejected  Result = "rejected"
	ResultExpired   Result = "expired"
	ResultStale     Result = "stale"
	ResultDuplicate Result = "duplicate"
)

// Errors the packages share, so that a consumer can act on a failure
// without importing the package that produced it.
var (
	// ErrNotImplemented is returned for a point the device marks as absent.
	ErrNotImplemented = errors.New("not implemented by device")
	// ErrDiskFull is wrapped by the errors of writes that failed because
	// the file system is out of space: nothing else is wrong, and the write
	// may succeed once space returns.
	ErrDiskFull = errors.New("disk full")
	// ErrNotEffective is wrapped by the error of a device write whose
	// read-back does not show what was written.
	ErrNotEffective = errors.New("device did not take the command")
	// ErrInvalidEvent is wrapped by the error of publishing an event that
	// can never be encoded: its data is not a JSON object, or it sets a
	// key the envelope owns. Retrying cannot help.
	ErrInvalidEvent = errors.New("invalid event")
)

// Event is something the agent reports besides readings: a safety trip, a
// setpoint outcome, a connectivity change, a gap in the readings. ID is
// assigned by the outbox that stores it, strictly increasing. Data is a
// JSON object (or nil) whose keys depend on Type; docs/mqtt.md lists them.
type Event struct {
	ID   uint64
	Time time.Time
	Type string
	Data json.RawMessage
}

// FieldError is one problem with one setting. Field is the setting's key
// relative to the section that holds it ("broker", "soc_min_pct",
// "devices[0].address"), so that the config loader can name the file's
// line. Each package validates its own settings and reports FieldErrors.
type FieldError struct {
	Field string
	Msg   string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// FieldErrors is every problem found in one section of settings.
type FieldErrors []FieldError

// Add records a problem with field.
func (es *FieldErrors) Add(field, format string, args ...any) {
	*es = append(*es, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Err returns es as an error, or nil when there is no problem.
func (es FieldErrors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

func (es FieldErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// DeviceError wraps an error with the name of the device it came from.
type DeviceError struct {
	Device string
	Err    error
}

func (e *DeviceError) Error() string { return fmt.Sprintf("device %s: %v", e.Device, e.Err) }
func (e *DeviceError) Unwrap() error { return e.Err }

// Reason is the code a setpoint ack (and a setpoint_rejected or
// lease_ended event) carries: which check refused or bound the setpoint,
// so the cloud can act on it. The codes are a closed set: the ones
// declared here and the names of the safety rules (RuleReason); the ack
// schema's enum lists exactly these (TestAckReasonsAreTheSchemas).
type Reason string

// RuleReason is the reason an ack carries when a safety rule bound or
// refused the setpoint: the rule's name.
func RuleReason(r Rule) Reason { return Reason(r) }

// Reason codes carried in setpoint acks and events.
const (
	ReasonTooLarge       Reason = "too_large"        // payload over the size limit
	ReasonBadJSON        Reason = "bad_json"         // not strict JSON, or wrong types
	ReasonUnknownField   Reason = "unknown_field"    // a field the contract does not define
	ReasonUnsigned       Reason = "unsigned"         // signatures are required and none came
	ReasonUnknownKey     Reason = "unknown_key"      // signed with a key id not configured
	ReasonBadSignature   Reason = "bad_signature"    // signature does not verify over the payload
	ReasonStale          Reason = "stale"            // version older than the highest seen
	ReasonDuplicate      Reason = "duplicate"        // version equal to the highest seen
	ReasonExpired        Reason = "expired"          // valid_until already passed
	ReasonLeaseTooLong   Reason = "lease_too_long"   // valid_until beyond safety.max_lease
	ReasonIssuedInFuture Reason = "issued_in_future" // issued_at ahead of the clock beyond skew
	ReasonBadValue       Reason = "bad_value"        // a value is missing, not finite or out of range
	ReasonUnknownMode    Reason = "unknown_mode"     // mode or fallback is not a known mode
	ReasonNoMeter        Reason = "no_meter"         // self_consumption without a configured meter
	ReasonSafety         Reason = "safety"           // refused by a safety rule; the ack names it
	ReasonWrongGateway   Reason = "wrong_gateway"    // a signed lease that names another gateway, or none
	ReasonKeyRevoked     Reason = "key_revoked"      // signed with a key listed in uplink.revoked_keys
	ReasonEnded          Reason = "ended"            // this version already ran and has ended: send a new one
	ReasonLocalOverride  Reason = "local_override"   // accepted, but a local lease (hearth mode) runs until it ends
)

// ReasonNoDevice refuses a lease of any mode but auto on a gateway that
// commands no device (its devices are read-only, or lack
// allow_unguarded_control): acking it applied would tell the cloud a
// battery follows that does not.
const ReasonNoDevice Reason = "no_controllable_device"

// ReasonNoResult acks a setpoint the gateway judged without giving an
// outcome: a fault of the gateway (the controller always gives one),
// never a verdict on the lease; the state and events say what runs.
const ReasonNoResult Reason = "no_result"

// Ack is the outcome of one setpoint message, published on …/setpoint/ack.
type Ack struct {
	ID       string `json:"id"`
	Version  uint64 `json:"version"`
	Result   Result `json:"result"`
	Reason   Reason `json:"reason,omitempty"`
	AppliedW *Watts `json:"applied_w,omitempty"`
	// Clock is the gateway's clock state when it judged the lease, and
	// HoldS the seconds of validity it will hold an accepted lease for,
	// measured from receipt on its monotonic clock: the cloud sees what
	// the gateway made of valid_until.
	Clock ClockState `json:"clock,omitempty"`
	HoldS *float64   `json:"hold_s,omitempty"`
	// KeyID is the key the lease was verified with, when signed.
	KeyID string `json:"key_id,omitempty"`
	// Detail says in words what the reason code sums up (the field, the
	// value, the parser's complaint), at most MaxAckDetail bytes.
	Detail string `json:"detail,omitempty"`
	// HighestVersion is, on a stale ack, the highest version the gateway
	// has accepted: the cloud numbers its next lease above it.
	HighestVersion *uint64 `json:"highest_version,omitempty"`
	// Excluded names the devices that take no part in the lease as it
	// starts, each with the rule that holds it (device_down, a trip): the
	// site is partial, and applied_w is what the others can take.
	Excluded map[string]string `json:"excluded,omitempty"`
}

// MaxAckDetail bounds an ack's Detail.
const MaxAckDetail = 256

// ClipDetail shortens s to at most MaxAckDetail bytes, on a rune
// boundary, marking the cut with "…".
func ClipDetail(s string) string {
	if len(s) <= MaxAckDetail {
		return s
	}
	cut := MaxAckDetail - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// LeaseInfo describes the lease being executed.
type LeaseInfo struct {
	ID         string    `json:"id"`
	Version    uint64    `json:"version,omitempty"` // 0 for a local lease, which has none
	ValidUntil time.Time `json:"valid_until"`
	Fallback   Mode      `json:"fallback"`
	Source     string    `json:"source"` // "cloud", or "local" for a field override
	// RemainingS is how many more seconds the gateway holds the lease, as
	// of the state's ts, measured on its monotonic clock.
	RemainingS float64 `json:"remaining_s"`
	KeyID      string  `json:"key_id,omitempty"`
}

// State is what the agent is doing, published retained on …/state on every
// change of lease, mode or safety state.
type State struct {
	Time     time.Time  `json:"ts"`
	Clock    ClockState `json:"clock,omitempty"` // whether the gateway's wall clock is synchronised
	Mode     Mode       `json:"mode"`
	Lease    *LeaseInfo `json:"lease,omitempty"`
	AppliedW *Watts     `json:"applied_w,omitempty"`
	Safety   string     `json:"safety"`          // "ok", or the rule holding the battery
	Trips    []string   `json:"trips,omitempty"` // rules currently tripped
	// NotEffective names the devices that do not follow the command they
	// hold (read-back or measured power), while they do not.
	NotEffective []string `json:"not_effective,omitempty"`
	// Devices is the safety of each controllable device, by name: Safety
	// and Trips above are the site's (every device's trips and the
	// site's own), these say which device holds which.
	Devices map[string]DeviceSafety `json:"devices,omitempty"`
}

// DeviceSafety is one device's safety state.
type DeviceSafety struct {
	// Safety is "ok", "device_down" while the device cannot be read, or
	// the rule holding it.
	Safety string   `json:"safety"`
	Trips  []string `json:"trips,omitempty"` // rules tripped on this device
	// MayHoldW is set while a device with no timeout of its own may still
	// hold this power: the agent could neither refresh nor release its
	// command for longer than its hold bound.
	MayHoldW *Watts `json:"may_hold_w,omitempty"`
}

// Same reports whether two states say the same, whatever their times and
// the seconds a lease has left: only a change is worth publishing.
func (s State) Same(o State) bool {
	s.Time, o.Time = time.Time{}, time.Time{}
	if s.Lease != nil && o.Lease != nil {
		a, b := *s.Lease, *o.Lease
		a.RemainingS, b.RemainingS = 0, 0
		s.Lease, o.Lease = &a, &b
	}
	return reflect.DeepEqual(s, o)
}
