package safety

import (
	"math"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

func setpoint(version uint64, issued, until time.Time, mode hearth.Mode, w *hearth.Watts) hearth.Setpoint {
	return hearth.Setpoint{ID: "sp", Version: version, IssuedAt: issued, ValidUntil: until, Mode: mode, PowerW: w, Fallback: hearth.ModeAuto}
}

func TestCheckOrder(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	now := t0
	ok := setpoint(5, now, now.Add(15*time.Minute), hearth.ModePower, watts(1000))
	mod := func(f func(*hearth.Setpoint)) hearth.Setpoint { sp := ok; f(&sp); return sp }
	cases := []struct {
		name     string
		sp       hearth.Setpoint
		synced   bool
		meter    bool
		want     hearth.Result
		reason   hearth.Reason
		accepted bool
	}{
		{"valid", ok, true, false, "", "", true},
		{"older version", mod(func(s *hearth.Setpoint) { s.Version = 3 }), true, false, hearth.ResultStale, hearth.ReasonStale, false},
		{"equal version", mod(func(s *hearth.Setpoint) { s.Version = 4 }), true, false, hearth.ResultDuplicate, hearth.ReasonDuplicate, false},
		{"stale beats expired", mod(func(s *hearth.Setpoint) { s.Version = 3; s.ValidUntil = now.Add(-time.Second) }), true, false, hearth.ResultStale, hearth.ReasonStale, false},
		{"expired", mod(func(s *hearth.Setpoint) { s.IssuedAt = now.Add(-time.Hour); s.ValidUntil = now.Add(-time.Second) }), true, false, hearth.ResultExpired, hearth.ReasonExpired, false},
		{"expired beats bad mode", mod(func(s *hearth.Setpoint) { s.IssuedAt = now.Add(-time.Hour); s.ValidUntil = now; s.Mode = "turbo" }), true, false, hearth.ResultExpired, hearth.ReasonExpired, false},
		{"too long", mod(func(s *hearth.Setpoint) { s.ValidUntil = now.Add(25 * time.Hour) }), true, false, hearth.ResultRejected, hearth.ReasonLeaseTooLong, false},
		{"issued in the future", mod(func(s *hearth.Setpoint) { s.IssuedAt = now.Add(time.Minute) }), true, false, hearth.ResultRejected, hearth.ReasonIssuedInFuture, false},
		{"future within skew", mod(func(s *hearth.Setpoint) { s.IssuedAt = now.Add(20 * time.Second) }), true, false, "", "", true},
		{"unsynced clock judges only the length", mod(func(s *hearth.Setpoint) {
			s.IssuedAt = now.Add(-48 * time.Hour)
			s.ValidUntil = now.Add(-47 * time.Hour)
		}), false, false, "", "", true},
		{"unsynced clock, but valid_until is before the floor", mod(func(s *hearth.Setpoint) {
			s.IssuedAt = now.Add(-300 * 24 * time.Hour)
			s.ValidUntil = now.Add(-299 * 24 * time.Hour)
		}), false, false, hearth.ResultExpired, hearth.ReasonExpired, false},
		{"unknown mode", mod(func(s *hearth.Setpoint) { s.Mode = "turbo" }), true, false, hearth.ResultRejected, hearth.ReasonUnknownMode, false},
		{"unknown fallback", mod(func(s *hearth.Setpoint) { s.Fallback = "power" }), true, false, hearth.ResultRejected, hearth.ReasonUnknownMode, false},
		{"no power", mod(func(s *hearth.Setpoint) { s.PowerW = nil }), true, false, hearth.ResultRejected, hearth.ReasonBadValue, false},
		{"infinite power", mod(func(s *hearth.Setpoint) { s.PowerW = watts(math.Inf(1)) }), true, false, hearth.ResultRejected, hearth.ReasonBadValue, false},
		{"self consumption without meter", mod(func(s *hearth.Setpoint) { s.Mode = hearth.ModeSelfConsumption; s.PowerW = nil }), true, false, hearth.ResultRejected, hearth.ReasonNoMeter, false},
		{"self consumption with meter", mod(func(s *hearth.Setpoint) { s.Mode = hearth.ModeSelfConsumption; s.PowerW = nil }), true, true, "", "", true},
		{"bad schedule slot", mod(func(s *hearth.Setpoint) {
			s.Schedule = []hearth.ScheduleEntry{{Start: now, End: now.Add(time.Minute), Mode: hearth.ModePower, PowerW: watts(math.NaN())}}
		}), true, false, hearth.ResultRejected, hearth.ReasonBadValue, false},
	}
	// The floor: a lower bound on true time, well before now (the
	// binary's build, say) but after every valid_until above but one.
	floor := now.Add(-30 * 24 * time.Hour)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := lim.Check(c.sp, 4, hearth.Instant{Wall: now, Mono: time.Hour}, c.synced, floor, c.meter)
			if v.OK != c.accepted || v.Result != c.want || v.Reason != c.reason {
				t.Errorf("got %+v, want ok=%v %s/%s", v, c.accepted, c.want, c.reason)
			}
		})
	}
}

// at is an instant mono after the process origin, with the wall clock at
// wall.
func at(wall time.Time, mono time.Duration) hearth.Instant {
	return hearth.Instant{Wall: wall, Mono: mono}
}

func TestLeaseExpiryAndSchedule(t *testing.T) {
	t.Parallel()
	sp := setpoint(1, t0, t0.Add(10*time.Minute), hearth.ModePower, watts(-3000))
	sp.Schedule = []hearth.ScheduleEntry{{Start: t0.Add(2 * time.Minute), End: t0.Add(4 * time.Minute), Mode: hearth.ModePower, PowerW: watts(2000)}}
	m0 := time.Hour // monotonic reading at receipt

	synced := Accept(sp, SourceCloud, at(t0, m0), true, time.Time{})
	if got := synced.Target(at(t0.Add(time.Minute), m0+time.Minute)); got != power(-3000) {
		t.Errorf("before the slot: %+v", got)
	}
	if got := synced.Target(at(t0.Add(3*time.Minute), m0+3*time.Minute)); got != power(2000) {
		t.Errorf("in the slot: %+v", got)
	}
	end := at(t0.Add(10*time.Minute), m0+10*time.Minute)
	if synced.Expired(end.Add(-time.Nanosecond), true, time.Time{}) || !synced.Expired(end, true, time.Time{}) {
		t.Error("synced lease does not end exactly at valid_until")
	}

	// Received on a clock stuck in 1970: the lease runs its length from
	// receipt, and the schedule runs on the same offset.
	boot := time.Date(1970, 1, 1, 0, 0, 30, 0, time.UTC)
	unsynced := Accept(sp, SourceCloud, at(boot, m0), false, time.Time{})
	if unsynced.Expired(at(boot.Add(9*time.Minute), m0+9*time.Minute), false, time.Time{}) {
		t.Error("unsynced lease expired early")
	}
	if !unsynced.Expired(at(boot.Add(10*time.Minute), m0+10*time.Minute), false, time.Time{}) {
		t.Error("unsynced lease outlived its length")
	}
	if got := unsynced.Target(at(boot.Add(3*time.Minute), m0+3*time.Minute)); got != power(2000) {
		t.Errorf("unsynced schedule slot: %+v", got)
	}
	// The clock syncs mid-lease: wall time also ends it.
	if !unsynced.Expired(at(t0.Add(11*time.Minute), m0+5*time.Minute), true, time.Time{}) {
		t.Error("unsynced lease not ended by a synced wall clock past valid_until")
	}
}

// TestWallClockStepsCannotStretchALease: each way a wall clock can move
// under a running lease, and what the lease does.
func TestWallClockStepsCannotStretchALease(t *testing.T) {
	t.Parallel()
	m0 := time.Hour
	sp := setpoint(1, t0, t0.Add(10*time.Minute), hearth.ModePower, watts(1000))

	// Stepped back an hour five minutes in: it still ends ten minutes
	// after receipt, not an hour later.
	l := Accept(sp, SourceCloud, at(t0, m0), true, time.Time{})
	back := func(d time.Duration) hearth.Instant { return at(t0.Add(d-time.Hour), m0+d) }
	if l.Expired(back(9*time.Minute), true, time.Time{}) {
		t.Error("expired early after the step back")
	}
	if !l.Expired(back(10*time.Minute), true, time.Time{}) {
		t.Errorf("a wall clock stepped back an hour stretched the lease: %s left at ten minutes", l.Left(back(10*time.Minute), true, time.Time{}))
	}
	// The schedule does not move with the step either.
	if got := l.leaseTime(back(5 * time.Minute)); !got.Equal(t0.Add(5 * time.Minute)) {
		t.Errorf("lease time after the step back: %s, want %s", got, t0.Add(5*time.Minute))
	}

	// Received with ten minutes left, then the clock turns unsynced: ten
	// minutes, not the lease's full hour.
	late := setpoint(2, t0.Add(-50*time.Minute), t0.Add(10*time.Minute), hearth.ModePower, watts(1000))
	l = Accept(late, SourceCloud, at(t0, m0), true, time.Time{})
	if l.Hold != 10*time.Minute {
		t.Errorf("hold %s for a lease received with ten minutes left", l.Hold)
	}
	if !l.Expired(at(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), m0+10*time.Minute), false, time.Time{}) {
		t.Error("a lease received with ten minutes left ran on when the clock turned unsynced")
	}

	// Stepped forward a day: it ends at once (valid_until has passed on
	// a synchronised clock), never later.
	l = Accept(sp, SourceCloud, at(t0, m0), true, time.Time{})
	if !l.Expired(at(t0.Add(24*time.Hour), m0+time.Minute), true, time.Time{}) {
		t.Error("a lease outlived a wall clock past its valid_until")
	}

	// On an unsynchronised clock a floor after valid_until ends it, and a
	// floor before it shortens the hold.
	old := setpoint(3, t0.Add(-300*24*time.Hour), t0.Add(-299*24*time.Hour), hearth.ModePower, watts(1000))
	l = Accept(old, SourceCloud, at(time.Unix(30, 0), m0), false, t0)
	if l.Hold != 0 || !l.Expired(at(time.Unix(30, 0), m0), false, t0) {
		t.Errorf("a lease 299 days past valid_until, floor today, unsynced clock: hold %s", l.Hold)
	}
	l = Accept(sp, SourceCloud, at(time.Unix(30, 0), m0), false, t0.Add(8*time.Minute))
	if l.Hold != 2*time.Minute {
		t.Errorf("floor two minutes before valid_until: hold %s, want 2m", l.Hold)
	}
}

// TestLeaseResume: a persisted lease is resumed after a restart only on a
// synchronised clock, with the time it already ran counted.
func TestLeaseResume(t *testing.T) {
	t.Parallel()
	sp := setpoint(1, t0, t0.Add(10*time.Minute), hearth.ModePower, watts(1000))
	l := Accept(sp, SourceCloud, at(t0, time.Hour), true, time.Time{})
	restart := func(wall time.Time, synced bool, floor time.Time) (Lease, string) {
		c := l
		c.ReceivedMono = 0 // not persisted
		r := c.Resume(at(wall, 5*time.Second), synced, floor)
		return c, r
	}
	if c, r := restart(t0.Add(4*time.Minute), true, time.Time{}); r != "" || c.Left(at(t0.Add(4*time.Minute), 5*time.Second), true, time.Time{}) != 6*time.Minute {
		t.Errorf("resumed four minutes in: %q, %s left", r, c.Left(at(t0.Add(4*time.Minute), 5*time.Second), true, time.Time{}))
	}
	if _, r := restart(t0.Add(4*time.Minute), false, time.Time{}); r != "clock_unsynced" {
		t.Errorf("unsynced restart: %q, want clock_unsynced", r)
	}
	if _, r := restart(t0.Add(11*time.Minute), true, time.Time{}); r != "expired" {
		t.Errorf("restart after valid_until: %q, want expired", r)
	}
	if _, r := restart(t0.Add(-time.Hour), true, time.Time{}); r != "clock_unsynced" {
		t.Errorf("restart with the wall clock before receipt: %q, want clock_unsynced", r)
	}
	// The wall clock says four minutes, the floor nine: nine have passed.
	if c, r := restart(t0.Add(4*time.Minute), true, t0.Add(9*time.Minute)); r != "" || c.Left(at(t0.Add(4*time.Minute), 5*time.Second), true, t0.Add(9*time.Minute)) != time.Minute {
		t.Errorf("floor ahead of the wall clock: %q", r)
	}
}

// TestLeaseResumeFromAnEarlierAgent: a lease persisted by an agent that
// kept no hold (before an upgrade) resumes with the hold it had at
// receipt.
func TestLeaseResumeFromAnEarlierAgent(t *testing.T) {
	t.Parallel()
	sp := setpoint(1, t0, t0.Add(10*time.Minute), hearth.ModePower, watts(1000))
	old := Lease{Setpoint: sp, Source: SourceCloud, Received: t0, Synced: true}
	if r := old.Resume(at(t0.Add(4*time.Minute), time.Second), true, time.Time{}); r != "" {
		t.Fatalf("resume: %q", r)
	}
	if got := old.Left(at(t0.Add(4*time.Minute), time.Second), true, time.Time{}); got != 6*time.Minute {
		t.Errorf("%s left, want 6m", got)
	}
}

// TestUnverifiableLeaseHoldIsCapped: on an unsynchronised clock with no
// floor, nothing tells how old a lease is: it is held for its length, at
// most UnverifiedHold. A floor, or a synchronised clock, judges it instead.
func TestUnverifiableLeaseHoldIsCapped(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)
	w := hearth.Watts(800)
	long := setpoint(1, t0.Add(-300*24*time.Hour), t0.Add(-299*24*time.Hour), hearth.ModePower, &w)
	boot := hearth.Instant{Wall: time.Unix(300, 0).UTC(), Mono: time.Second}
	if l := Accept(long, SourceCloud, boot, false, time.Time{}); l.Hold != UnverifiedHold {
		t.Errorf("24 h lease, unsynced, no floor: hold %s, want %s", l.Hold, UnverifiedHold)
	}
	short := setpoint(2, t0, t0.Add(5*time.Minute), hearth.ModePower, &w)
	if l := Accept(short, SourceCloud, boot, false, time.Time{}); l.Hold != 5*time.Minute {
		t.Errorf("5 min lease, unsynced, no floor: hold %s, want its length", l.Hold)
	}
	if l := Accept(long, SourceCloud, boot, false, t0); l.Hold > 0 {
		t.Errorf("with a floor after its end: hold %s, want none", l.Hold)
	}
}
