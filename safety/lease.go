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
//
// The time model: a lease ends at the earliest of three moments. (1) Its
// hold has passed on the monotonic clock since receipt: the hold is the
// validity left at receipt as the gateway could judge it, so no later step
// of the wall clock can stretch it. (2) The wall clock, while synchronised,
// reaches valid_until. (3) The floor, a lower bound on true time the agent
// keeps (see the control package), reaches valid_until, whatever the
// kernel says of the wall clock.
type Lease struct {
	Setpoint hearth.Setpoint `json:"setpoint"`
	Source   string          `json:"source"`
	// Received is the wall clock's reading at receipt; Synced says whether
	// it was synchronised then.
	Received time.Time `json:"received"`
	Synced   bool      `json:"synced"`
	// Start is the best estimate of true time at receipt: the wall time
	// when synchronised, else the later of issued_at and the floor. The
	// schedule runs from it on the monotonic clock.
	Start time.Time `json:"start"`
	// Hold is how long the lease is held from receipt, on the monotonic
	// clock. It never grows.
	Hold time.Duration `json:"hold"`
	// ReceivedMono is the monotonic reading at receipt. It means something
	// only in the process that received the lease; Resume sets it anew
	// after a restart.
	ReceivedMono time.Duration `json:"-"`
}

// UnverifiedHold caps how long a lease is held when nothing can tell how
// old it is: the wall clock is not synchronised and there is no floor
// under true time (a binary with no build time, on a gateway that never
// had a synchronised clock or a verified lease). Such a lease is held for
// its own length at most, and never longer than this: a lease that ended
// months ago, redelivered, holds the battery for minutes, not a day. It
// is the length of a typical cloud lease, which the cloud renews.
const UnverifiedHold = 15 * time.Minute

// Accept makes a lease of sp, received at now, where synced says whether
// the wall clock can be trusted and floor is the lower bound on true time
// (zero: none). The hold is the validity left at receipt: valid_until
// minus the wall time when synchronised, else the lease's length; never
// more than valid_until minus the floor, nor, unsynchronised with no
// floor, UnverifiedHold. A lease with no hold left is
// already over: Check refuses it as expired.
func Accept(sp hearth.Setpoint, source string, now hearth.Instant, synced bool, floor time.Time) Lease {
	l := Lease{Setpoint: sp, Source: source, Received: now.Wall, Synced: synced, ReceivedMono: now.Mono}
	if synced {
		l.Start = now.Wall
		l.Hold = sp.ValidUntil.Sub(now.Wall)
	} else {
		l.Start = later(sp.IssuedAt, floor)
		l.Hold = l.Length()
	}
	if !floor.IsZero() {
		l.Hold = min(l.Hold, sp.ValidUntil.Sub(floor))
	} else if !synced {
		l.Hold = min(l.Hold, UnverifiedHold)
	}
	l.Hold = max(l.Hold, 0)
	return l
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Length is how long the lease runs from its issue.
func (l Lease) Length() time.Duration {
	return l.Setpoint.ValidUntil.Sub(l.Setpoint.IssuedAt)
}

// Left returns how much longer the lease is held at now (≤ 0: it has
// ended): the earliest of its hold on the monotonic clock, valid_until on
// the wall clock when synced, and valid_until on the floor.
func (l Lease) Left(now hearth.Instant, synced bool, floor time.Time) time.Duration {
	left := l.Hold - (now.Mono - l.ReceivedMono)
	if synced {
		left = min(left, l.Setpoint.ValidUntil.Sub(now.Wall))
	}
	if !floor.IsZero() {
		left = min(left, l.Setpoint.ValidUntil.Sub(floor))
	}
	return left
}

// Expired reports whether the lease has ended at now.
func (l Lease) Expired(now hearth.Instant, synced bool, floor time.Time) bool {
	return l.Left(now, synced, floor) <= 0
}

// Resume continues in a new process a lease persisted by an earlier one,
// at now. How long the agent was down is known only from the wall clock,
// so a lease is resumed only when the wall clock is synchronised now and
// was at receipt; the time since receipt is then taken as at least the
// later of the wall time and the floor, minus Start. It returns "" when
// the lease runs on, else the reason it ended: clock_unsynced, or expired.
func (l *Lease) Resume(now hearth.Instant, synced bool, floor time.Time) string {
	if l.Hold <= 0 && l.Start.IsZero() {
		// Persisted by an agent that kept neither: the hold it would have
		// given the lease at receipt.
		l.Start, l.Hold = l.Received, l.Length()
		if l.Synced {
			l.Hold = l.Setpoint.ValidUntil.Sub(l.Received)
		}
	}
	if !synced || !l.Synced {
		return "clock_unsynced"
	}
	elapsed := later(now.Wall, floor).Sub(l.Start)
	if elapsed < 0 {
		// The wall clock is before the lease's receipt: it was stepped
		// back, and how long the lease has run cannot be known.
		return "clock_unsynced"
	}
	l.ReceivedMono = now.Mono - elapsed
	if l.Expired(now, synced, floor) {
		return "expired"
	}
	return ""
}

// leaseTime maps now onto the lease's own timeline (the issuer's wall
// clock): Start plus the time since receipt on the monotonic clock, which
// a step of the wall clock does not move.
func (l Lease) leaseTime(now hearth.Instant) time.Time {
	return l.Start.Add(now.Mono - l.ReceivedMono)
}

// Target returns what the lease asks for at now: the schedule slot that
// covers now, else the lease's own mode and power. Schedules run from the
// stored lease alone, with no connection.
func (l Lease) Target(now hearth.Instant) Target {
	t := l.leaseTime(now)
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

// Info describes the lease for state reports, as of now.
func (l Lease) Info(now hearth.Instant, synced bool, floor time.Time) hearth.LeaseInfo {
	left := max(l.Left(now, synced, floor), 0)
	return hearth.LeaseInfo{ID: l.Setpoint.ID, Version: l.Setpoint.Version,
		ValidUntil: l.Setpoint.ValidUntil, Fallback: l.Setpoint.Fallback, Source: l.Source,
		RemainingS: math.Round(left.Seconds()*10) / 10, KeyID: l.Setpoint.KeyID}
}

// Verdict is the outcome of the version, time and value checks of a
// setpoint. OK means it may go on to the safety check; otherwise Result
// and Reason are what the ack carries.
type Verdict struct {
	OK     bool
	Result hearth.Result
	Reason hearth.Reason
}

func refuse(res hearth.Result, reason hearth.Reason) Verdict {
	return Verdict{Result: res, Reason: reason}
}

// Check runs the checks of a setpoint that come before safety, in the
// order of the contract: version (older than highest: stale; equal:
// duplicate), time (expired; longer than MaxLease; issued in the future
// beyond ClockSkew), values (finite, known modes, a meter for
// self_consumption). highest is the highest version accepted so far, 0 for
// none. now is the evaluating clock; synced says whether its wall time can
// be trusted, and floor is a lower bound on true time (zero: none). A lease
// whose valid_until is not after the floor is expired whatever the wall
// clock says; otherwise, on an unsynchronised clock, only the lease's own
// length is judged.
func (l Limits) Check(sp hearth.Setpoint, highest uint64, now hearth.Instant, synced bool, floor time.Time, hasMeter bool) Verdict {
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
	wall := now.Wall
	switch {
	case length <= 0, synced && !wall.Before(sp.ValidUntil), !floor.IsZero() && !floor.Before(sp.ValidUntil):
		return refuse(hearth.ResultExpired, hearth.ReasonExpired)
	case length > l.MaxLease, synced && sp.ValidUntil.Sub(wall) > l.MaxLease:
		return refuse(hearth.ResultRejected, hearth.ReasonLeaseTooLong)
	case synced && sp.IssuedAt.Sub(wall) > l.ClockSkew:
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
