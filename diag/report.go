package diag

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
)

// The diagnostics API's records. Their JSON form is the stable output of
// the CLI's --json flag, documented in docs/diagnostics.md; fields are only
// ever added.

// StatusReport is everything `hearth status` shows.
type StatusReport struct {
	Time    time.Time      `json:"ts"`
	Agent   AgentReport    `json:"agent"`
	Devices []DeviceReport `json:"devices"`
	Safety  SafetyReport   `json:"safety"`
	Lease   *LeaseReport   `json:"lease"`
	Uplink  UplinkReport   `json:"uplink"`
	Buffer  BufferReport   `json:"buffer"`
	// Verdict is "OK", or "DEGRADED: " and the reasons, most serious first.
	Verdict string   `json:"verdict"`
	Reasons []string `json:"reasons"`
}

// AgentReport describes the running agent.
type AgentReport struct {
	Version   string            `json:"version"`
	GatewayID string            `json:"gateway_id"`
	Boot      string            `json:"boot"`
	Started   time.Time         `json:"started"`
	UptimeS   float64           `json:"uptime_s"`
	Clock     hearth.ClockState `json:"clock"`
	LogLevel  string            `json:"log_level"`
	// LocalModes are the modes `hearth mode set` can hold here; "power"
	// (a test power for commissioning) only where the control loop can.
	LocalModes []string `json:"local_modes"`
	// ClockFloor is the lower bound on true time the agent judges leases
	// by, and the build time under it.
	ClockFloor *ClockFloorReport `json:"clock_floor,omitempty"`
}

// ClockFloorReport is the floor under true time (docs/safety.md, "Time").
type ClockFloorReport struct {
	Floor *time.Time `json:"floor,omitempty"` // the bound now; absent: none
	// WallAhead: the synchronised wall clock is more than a day ahead of
	// the floor, and raises it only once a verified signed lease agrees.
	WallAhead bool `json:"wall_ahead,omitempty"`
	// Distrusted is a floor found far ahead of every other source and
	// dropped (a clock_floor_distrusted event says when).
	Distrusted *time.Time `json:"distrusted,omitempty"`
	// BuildTime is the binary's build time (absent: unknown), and
	// BuildTimeFrom where it came from: stamp, vcs, binary (the file's
	// time) or none. With none, a lease on an unsynchronised clock with no
	// floor is held at most 15 minutes.
	BuildTime     *time.Time `json:"build_time,omitempty"`
	BuildTimeFrom string     `json:"build_time_from,omitempty"`
}

// ConfirmRequest is the body of POST /v1/lease/reset-version and
// /v1/clock/reset-floor. Confirm must be the gateway's id: the reset is
// deliberate.
type ConfirmRequest struct {
	Confirm string `json:"confirm"`
}

// ResetFloorResult answers POST /v1/clock/reset-floor: the floor before
// and after (the build time); absent: none.
type ResetFloorResult struct {
	From *time.Time `json:"from,omitempty"`
	To   *time.Time `json:"to,omitempty"`
}

// DeviceReport is one device's health.
type DeviceReport struct {
	Name      string     `json:"name"`
	Transport string     `json:"transport"`
	Address   string     `json:"address"`
	UnitID    int        `json:"unit_id"`
	Up        bool       `json:"up"`
	LastPoll  *time.Time `json:"last_poll,omitempty"`
	LastOK    *time.Time `json:"last_ok,omitempty"`
	Polls     uint64     `json:"polls"`
	Failures  uint64     `json:"failures"`
	// LastError is the latest poll's error; while the link waits to probe
	// a device marked down, it names the last attempt's error too.
	LastError string `json:"last_error,omitempty"`
	// Cause classifies LastError (diag.Cause* constants: connection_refused,
	// no_reply, …) and Hint says what to check next, while the device is
	// down.
	Cause       string     `json:"cause,omitempty"`
	Hint        string     `json:"hint,omitempty"`
	PollMS      float64    `json:"poll_ms"` // duration of the last poll
	Identity    *Identity  `json:"identity,omitempty"`
	DownSinceTS *time.Time `json:"down_since,omitempty"`
	// HeldW is the power the agent commands the device to hold and the
	// device holds by its read-back (positive discharging), while it
	// holds one; absent in auto.
	HeldW *hearth.Watts `json:"held_w,omitempty"`
	// NextProbe is when the link next asks a device marked down whether
	// it answers again; `hearth device probe` asks at once.
	NextProbe *time.Time `json:"next_probe,omitempty"`
}

// ProbeResult answers POST /v1/devices/{name}/probe: the device's report
// after the probe, and whether the probe was asked of a device marked
// down (false: it was up, and was polled as usual).
type ProbeResult struct {
	WasDown bool         `json:"was_down"`
	Device  DeviceReport `json:"device"`
}

// Identity is what a device says about itself.
type Identity struct {
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	Firmware     string `json:"firmware"`
}

// SafetyReport is the safety state.
type SafetyReport struct {
	State string   `json:"state"` // "ok", or the rule holding the battery
	Trips []string `json:"trips"`
	Mode  string   `json:"mode"`
	// AppliedW is the power last commanded, when the agent commands one.
	AppliedW *hearth.Watts `json:"applied_w,omitempty"`
	// Devices is each controllable device's own safety, by name: State
	// and Trips above are the site's.
	Devices map[string]hearth.DeviceSafety `json:"devices,omitempty"`
}

// LeaseReport is the active setpoint lease; RemainingS is how long the
// agent still holds it, measured on its monotonic clock.
type LeaseReport struct {
	hearth.LeaseInfo
}

// UplinkReport is the MQTT session's health.
type UplinkReport struct {
	// Broker is the node in use while connected; while down, the node
	// tried next.
	Broker string `json:"broker"`
	// Brokers lists the cluster's nodes when uplink.brokers names more
	// than one.
	Brokers        []string   `json:"brokers,omitempty"`
	Connected      bool       `json:"connected"`
	ConnectedSince *time.Time `json:"connected_since,omitempty"`
	DownSince      *time.Time `json:"down_since,omitempty"`
	Attempts       uint64     `json:"attempts"`
	Connects       uint64     `json:"connects"`
	Published      uint64     `json:"published"`
	LastError      string     `json:"last_error,omitempty"`
	// BootDelayUntil is when the random boot delay ends, while the agent
	// waits it out before its first attempt (the uplink is not down then:
	// it has not tried yet). NextAttempt is when the next attempt is due,
	// while it waits. `hearth uplink reconnect` attempts at once.
	BootDelayUntil *time.Time `json:"boot_delay_until,omitempty"`
	NextAttempt    *time.Time `json:"next_attempt,omitempty"`
	// LastDial is the latest TCP connection the agent opened to a node:
	// an attempt dialed and not connected waits on the broker.
	LastDial *DialReport `json:"last_dial,omitempty"`
}

// DialReport is one TCP connection opened to a broker node.
type DialReport struct {
	Broker string    `json:"broker"`
	At     time.Time `json:"at"`
}

// BufferReport is the telemetry buffer's depth and size.
type BufferReport struct {
	PendingReadings   int64      `json:"pending_readings"`
	PendingAggregates int64      `json:"pending_aggregates"`
	PendingEvents     int64      `json:"pending_events"`
	OldestPending     *time.Time `json:"oldest_pending,omitempty"`
	FileBytes         int64      `json:"file_bytes"`
	MaxBytes          int64      `json:"max_bytes"`
	// LastSeq is the last seq given to a reading (delivered live, stored,
	// or given up in a gap); ReservedSeq the highest seq set aside for
	// readings the agent holds in memory, used or not.
	LastSeq           uint64  `json:"last_seq"`
	ReservedSeq       uint64  `json:"reserved_seq"`
	Compactions       int64   `json:"compactions"`
	ReadingsCompacted int64   `json:"readings_compacted"`
	AggregatesDropped int64   `json:"aggregates_dropped"`
	ReadingsDropped   int64   `json:"readings_dropped"`
	EventsDropped     int64   `json:"events_dropped"`
	DiskFull          bool    `json:"disk_full"`
	ReadingsRefused   int64   `json:"readings_refused"`
	WriteBytes        int64   `json:"write_bytes"`
	CommitsPerHour    float64 `json:"commits_per_hour"`
	Error             string  `json:"error,omitempty"`
}

// KeysReport is the setpoint keys in force (GET /v1/keys, and the answer
// of POST /v1/keys/reload).
type KeysReport struct {
	Keys    []string `json:"keys"`    // key ids trusted to sign setpoints; none: unsigned accepted
	Revoked []string `json:"revoked"` // key ids refused
	// Closed says no key is in force and unsigned setpoints are refused
	// too: keys were configured on this gateway once (or some are
	// revoked), and uplink.allow_unsigned is not set. Every setpoint is
	// refused (no_keys).
	Closed bool `json:"closed,omitempty"`
	// LeaseEnded says a reload ended the running lease: its key is revoked.
	LeaseEnded bool `json:"lease_ended,omitempty"`
}

// ResetVersionResult answers POST /v1/lease/reset-version.
type ResetVersionResult struct {
	FromVersion uint64 `json:"from_version"` // the highest version forgotten
}

// PointReport is one point's latest value.
type PointReport struct {
	Device  string         `json:"device"`
	Name    string         `json:"name"`
	Value   *float64       `json:"v,omitempty"`
	Quality hearth.Quality `json:"q,omitempty"`
	Unit    string         `json:"unit"`
	Time    time.Time      `json:"ts"`
	AgeS    float64        `json:"age_s"`
	Stale   bool           `json:"stale"`
	// LastGood is the point's last value and LastGoodTS when it was
	// read, while the latest reading carries none (a device down, a
	// point out of range); absent when the point never had a value.
	LastGood   *float64   `json:"last_good,omitempty"`
	LastGoodTS *time.Time `json:"last_good_ts,omitempty"`
}

// EventReport is one event the agent recorded.
type EventReport struct {
	Time time.Time      `json:"ts"`
	Type string         `json:"type"`
	Data map[string]any `json:"data,omitempty"`
}

// UnitOf derives a point's unit from its name's suffix, as the data model
// names units.
func UnitOf(name string) string {
	for _, s := range []struct{ suffix, unit string }{
		{"_wh", "Wh"}, {"_w", "W"}, {"_pct", "%"}, {"_v", "V"}, {"_a", "A"}, {"_c", "°C"}, {"_hz", "Hz"},
		{"_v_max", "V"}, {"_v_min", "V"},
	} {
		if strings.HasSuffix(name, s.suffix) {
			return s.unit
		}
	}
	return ""
}

// Judge sums up a status report in its Verdict and Reasons: OK, or
// DEGRADED with its reasons, most serious first.
func (r *StatusReport) Judge(now time.Time) {
	var reasons []string
	if r.Safety.State != "" && r.Safety.State != "ok" {
		reasons = append(reasons, "safety: "+r.Safety.State)
	}
	var down []string
	for _, d := range r.Devices {
		if !d.Up {
			since := ""
			if d.DownSinceTS != nil {
				since = " for " + Age(now.Sub(*d.DownSinceTS))
			}
			if l := CauseLabel(d.Cause, d.UnitID); l != "" {
				since += " (" + l + ")"
			}
			down = append(down, d.Name+since)
		}
	}
	sort.Strings(down)
	if len(down) > 0 {
		reasons = append(reasons, "device down: "+strings.Join(down, ", "))
	}
	// Waiting out the boot delay is the design, not a fault: the uplink
	// has not been tried yet.
	if !r.Uplink.Connected && r.Uplink.BootDelayUntil == nil {
		msg := "uplink down"
		if r.Uplink.DownSince != nil {
			msg += " for " + Age(now.Sub(*r.Uplink.DownSince))
		}
		if r.Buffer.PendingReadings > 0 {
			msg += fmt.Sprintf(", %s readings buffered", thousands(r.Buffer.PendingReadings))
		}
		reasons = append(reasons, msg)
	}
	if r.Buffer.Error != "" {
		reasons = append(reasons, "buffer: "+r.Buffer.Error)
	} else if r.Buffer.DiskFull {
		reasons = append(reasons, fmt.Sprintf("disk full, %s readings not buffered", thousands(r.Buffer.ReadingsRefused)))
	} else if r.Buffer.MaxBytes > 0 && r.Buffer.FileBytes > r.Buffer.MaxBytes*9/10 {
		reasons = append(reasons, fmt.Sprintf("buffer at %d%% of its quota", 100*r.Buffer.FileBytes/r.Buffer.MaxBytes))
	}
	r.Reasons = reasons
	if len(reasons) == 0 {
		r.Verdict = "OK"
		r.Reasons = []string{}
		return
	}
	r.Verdict = "DEGRADED: " + strings.Join(reasons, "; ")
}

// Age formats a duration the way the CLI shows ages: 3s, 4m10s, 2h13m, 3d4h.
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// thousands writes n with thousands separators: 7812 → 7,812.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
