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
		reason   string
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
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := lim.Check(c.sp, 4, now, c.synced, c.meter)
			if v.OK != c.accepted || v.Result != c.want || v.Reason != c.reason {
				t.Errorf("got %+v, want ok=%v %s/%s", v, c.accepted, c.want, c.reason)
			}
		})
	}
}

func TestLeaseExpiryAndSchedule(t *testing.T) {
	t.Parallel()
	sp := setpoint(1, t0, t0.Add(10*time.Minute), hearth.ModePower, watts(-3000))
	sp.Schedule = []hearth.ScheduleEntry{{Start: t0.Add(2 * time.Minute), End: t0.Add(4 * time.Minute), Mode: hearth.ModePower, PowerW: watts(2000)}}

	synced := Lease{Setpoint: sp, Received: t0, Synced: true}
	if got := synced.Target(t0.Add(time.Minute), true); got != power(-3000) {
		t.Errorf("before the slot: %+v", got)
	}
	if got := synced.Target(t0.Add(3*time.Minute), true); got != power(2000) {
		t.Errorf("in the slot: %+v", got)
	}
	if synced.Expired(t0.Add(10*time.Minute-time.Nanosecond), true) || !synced.Expired(t0.Add(10*time.Minute), true) {
		t.Error("synced lease does not end exactly at valid_until")
	}

	// Received on a clock stuck in 1970: the lease runs its length from
	// receipt, and the schedule runs on the same offset.
	boot := time.Date(1970, 1, 1, 0, 0, 30, 0, time.UTC)
	unsynced := Lease{Setpoint: sp, Received: boot, Synced: false}
	if unsynced.Expired(boot.Add(9*time.Minute), false) {
		t.Error("unsynced lease expired early")
	}
	if !unsynced.Expired(boot.Add(10*time.Minute), false) {
		t.Error("unsynced lease outlived its length")
	}
	if got := unsynced.Target(boot.Add(3*time.Minute), false); got != power(2000) {
		t.Errorf("unsynced schedule slot: %+v", got)
	}
	// The clock syncs mid-lease: wall time also ends it.
	if !unsynced.Expired(t0.Add(11*time.Minute), true) {
		t.Error("unsynced lease not ended by a synced wall clock past valid_until")
	}
}
