package safety

import (
	"math"
	"time"

	"github.com/hearth-energy/hearth"
)

// Lease sources.
const (
	SourceCloud = "cloud"
	SourceLocal = "local" // a field override from the CLI
)

// Lease is a setpoint accepted for execution, with what is needed to tell
// when it ends whatever the wall clock does.
type Lease struct {
	Setpoint hearth.Setpoint `json:"setpoint"`
	Source   string          `json:"source"`
	// Received is when the lease arrived, on the evaluating clock. Within
	// one process it carries a monotonic reading; restored from disk it
	// does not.
	Received time.Time `json:"received"`
	// Synced says whether the wall clock was synchronised at receipt. A
	// lease received on an unsynchronised clock runs for
	// ValidUntil−IssuedAt from Received, on the monotonic clock.
	Synced bool `json:"synced"`
}

// Length is how long the lease runs from its issue.
func (l Lease) Length() time.Duration {
	return l.Setpoint.ValidUntil.Sub(l.Setpoint.IssuedAt)
}

// Expired reports whether the lease has ended at now. synced says whether
// the wall clock is synchronised now. When it is, valid_until is compared
// with the wall clock; a lease received unsynchronised also ends when its
// length has passed on the monotonic clock since receipt, whichever comes
// first.
func (l Lease) Expired(now time.Time, synced bool) bool {
	if synced && !now.Before(l.Setpoint.ValidUntil) {
		return true
	}
	if !l.Synced || !synced {
		return now.Sub(l.Received) >= l.Length()
	}
	return false
}

// leaseTime maps now onto the lease's own timeline (the issuer's wall
// clock): now itself when the clock is synchronised, else issued_at plus
// the time since receipt.
func (l Lease) leaseTime(now time.Time, synced bool) time.Time {
	if synced && l.Synced {
		return now
	}
	return l.Setpoint.IssuedAt.Add(now.Sub(l.Received))
}

// Target returns what the lease asks for at now: the schedule slot that
// covers now, else the lease's own mode and power. Schedules run from the
// stored lease alone, with no connection.
func (l Lease) Target(now time.Time, synced bool) Target {
	t := l.leaseTime(now, synced)
	for _, e := range l.Setpoint.Schedule {
		if !t.Before(e.Start) && t.Before(e.End) {
			return target(e.Mode, e.PowerW)
		}
	}
	return target(l.Setpoint.Mode, l.Setpoint.PowerW)
}

func target(m hearth.Mode, p *hearth.Watts) Target {
	t := Target{Mode: m}
	if m == hearth.ModePower && p != nil {
		t.Power = *p
	}
	return t
}

// Info describes the lease for state reports.
func (l Lease) Info() hearth.LeaseInfo {
	return hearth.LeaseInfo{ID: l.Setpoint.ID, Version: l.Setpoint.Version,
		ValidUntil: l.Setpoint.ValidUntil, Fallback: l.Setpoint.Fallback, Source: l.Source}
}

// Verdict is the outcome of the version, time and value checks of a
// setpoint. OK means it may go on to the safety check; otherwise Result
// and Reason are what the ack carries.
type Verdict struct {
	OK     bool
	Result hearth.Result
	Reason string
}

func refuse(res hearth.Result, reason string) Verdict {
	return Verdict{Result: res, Reason: reason}
}

// Check runs the checks of a setpoint that come before safety, in the
// order of the contract: version (older than highest: stale; equal:
// duplicate), time (expired; longer than MaxLease; issued in the future
// beyond ClockSkew), values (finite, known modes, a meter for
// self_consumption). highest is the highest version accepted so far, 0 for
// none. now is the evaluating clock; synced says whether its wall time can
// be trusted. When it cannot, only the lease's own length is judged.
func (l Limits) Check(sp hearth.Setpoint, highest uint64, now time.Time, synced, hasMeter bool) Verdict {
	switch {
	case sp.Version < highest:
		return refuse(hearth.ResultStale, hearth.ReasonStale)
	case sp.Version == highest:
		return refuse(hearth.ResultDuplicate, hearth.ReasonDuplicate)
	}
	if sp.ValidUntil.IsZero() || sp.IssuedAt.IsZero() {
		return refuse(hearth.ResultRejected, hearth.ReasonBadValue)
	}
	length := sp.ValidUntil.Sub(sp.IssuedAt)
	switch {
	case length <= 0, synced && !now.Before(sp.ValidUntil):
		return refuse(hearth.ResultExpired, hearth.ReasonExpired)
	case length > l.MaxLease, synced && sp.ValidUntil.Sub(now) > l.MaxLease:
		return refuse(hearth.ResultRejected, hearth.ReasonLeaseTooLong)
	case synced && sp.IssuedAt.Sub(now) > l.ClockSkew:
		return refuse(hearth.ResultRejected, hearth.ReasonIssuedInFuture)
	}
	if sp.ID == "" {
		return refuse(hearth.ResultRejected, hearth.ReasonBadValue)
	}
	if v := checkMode(sp.Mode, sp.PowerW, hasMeter); !v.OK {
		return v
	}
	switch sp.Fallback {
	case hearth.ModeAuto, hearth.ModeIdle:
	case hearth.ModeSelfConsumption:
		if !hasMeter {
			return refuse(hearth.ResultRejected, hearth.ReasonNoMeter)
		}
	default:
		return refuse(hearth.ResultRejected, hearth.ReasonUnknownMode)
	}
	for _, e := range sp.Schedule {
		if e.Start.IsZero() || !e.End.After(e.Start) {
			return refuse(hearth.ResultRejected, hearth.ReasonBadValue)
		}
		if v := checkMode(e.Mode, e.PowerW, hasMeter); !v.OK {
			return v
		}
	}
	return Verdict{OK: true}
}

func checkMode(m hearth.Mode, p *hearth.Watts, hasMeter bool) Verdict {
	if !m.Valid() {
		return refuse(hearth.ResultRejected, hearth.ReasonUnknownMode)
	}
	if m == hearth.ModeSelfConsumption && !hasMeter {
		return refuse(hearth.ResultRejected, hearth.ReasonNoMeter)
	}
	if m == hearth.ModePower && (p == nil || math.IsNaN(float64(*p)) || math.IsInf(float64(*p), 0)) {
		return refuse(hearth.ResultRejected, hearth.ReasonBadValue)
	}
	if p != nil && (math.IsNaN(float64(*p)) || math.IsInf(float64(*p), 0)) {
		return refuse(hearth.ResultRejected, hearth.ReasonBadValue)
	}
	return Verdict{OK: true}
}
