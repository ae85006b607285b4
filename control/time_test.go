package control

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/clocktest"
)

// discharging reports whether the simulator holds the lease's discharge.
func (r *ctlRig) discharging() bool {
	s := r.sim.State()
	return s.Mode == sim.ModeDischarge && s.BatteryW > 0
}

// TestWallClockStepBackDoesNotStretchALease: a synced lease of ten
// minutes, the wall clock stepped back an hour five minutes in: the lease
// still ends ten minutes after receipt, and the device is handed back.
func TestWallClockStepBackDoesNotStretchALease(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	r.ctl.Submit(lease(1, r.clock.Now(), 10*time.Minute, hearth.ModePower, 1000), r.clock.Instant())
	for range 5 {
		r.cycle(time.Minute)
	}
	r.clock.StepWall(-time.Hour)
	for range 4 {
		r.cycle(time.Minute)
	}
	if !r.discharging() {
		t.Fatalf("the lease ended early after the step back: %+v", r.sim.State())
	}
	r.cycle(time.Minute + time.Second)
	if _, ok := r.ctl.Lease(); ok {
		t.Fatal("ten minutes after receipt the lease still runs: the step back stretched it")
	}
	if ended := r.events(hearth.EventLeaseEnded); len(ended) != 1 || ended[0]["reason"] != "expired" {
		t.Errorf("lease_ended events %v, want one, expired", ended)
	}
	if r.discharging() {
		t.Error("the device still discharges after the lease ended")
	}
}

// TestLeaseWithTenMinutesLeftKeepsTenWhenClockTurnsUnsynced: a lease
// received with ten minutes of its hour left runs ten minutes, even when
// the wall clock turns unsynchronised mid-lease.
func TestLeaseWithTenMinutesLeftKeepsTenWhenClockTurnsUnsynced(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	now := r.clock.Now()
	sp := lease(1, now.Add(-50*time.Minute), time.Hour, hearth.ModePower, 1000)
	ack := r.ctl.Submit(sp, r.clock.Instant())
	if ack.HoldS == nil || *ack.HoldS != 600 || ack.Clock != hearth.ClockSynced {
		t.Fatalf("ack %+v, want held 600 s on a synced clock", ack)
	}
	r.synced = false
	r.clock.Set(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC))
	r.cycle(9 * time.Minute)
	if _, ok := r.ctl.Lease(); !ok {
		t.Fatal("the lease ended before its ten minutes")
	}
	if st := r.ctl.State(); st.Clock != hearth.ClockUnsynced || st.Lease == nil || st.Lease.RemainingS > 61 || st.Lease.RemainingS < 59 {
		t.Errorf("state %+v lease %+v, want unsynced with about 60 s left", st, st.Lease)
	}
	r.cycle(61 * time.Second)
	if _, ok := r.ctl.Lease(); ok {
		t.Fatal("a lease received with ten minutes left ran longer when the clock turned unsynced")
	}
}

// TestOldLeaseOnUnsyncedClockIsExpiredByTheFloor: a gateway booted into
// 1970 gets a 24-hour lease issued 300 days ago (a broker redelivering
// what it queued). The binary's build time is a floor under true time, so
// the lease is expired, not run for 24 hours from receipt.
func TestOldLeaseOnUnsyncedClockIsExpiredByTheFloor(t *testing.T) {
	t.Parallel()
	r := &ctlRig{t: t, clock: clocktest.New(time.Date(1970, 1, 1, 0, 5, 0, 0, time.UTC)), build: ctlT0.Add(-24 * time.Hour)}
	r.init()
	r.synced = false
	r.cycle(time.Second)
	sp := lease(1, ctlT0.Add(-300*24*time.Hour), 24*time.Hour, hearth.ModePower, 2000)
	if ack := r.ctl.Submit(sp, r.clock.Instant()); ack.Result != hearth.ResultExpired || ack.Clock != hearth.ClockUnsynced {
		t.Fatalf("ack %+v, want expired on an unsynced clock", ack)
	}
	r.cycle(time.Second)
	if r.discharging() {
		t.Error("the 300-day-old lease runs")
	}
	// A lease that is still valid by the floor runs, for no longer than
	// valid_until minus the floor.
	fresh := lease(2, r.build.Add(-110*time.Minute), 2*time.Hour, hearth.ModePower, 1000)
	ack := r.ctl.Submit(fresh, r.clock.Instant())
	if ack.Result != hearth.ResultApplied || ack.HoldS == nil || *ack.HoldS > 600 {
		t.Errorf("ack %+v, want applied and held at most 600 s", ack)
	}
}

// TestFloorSurvivesARestart: the newest synchronised time the agent saw
// is persisted, so after a reboot into 1970 a lease that expired before
// it is refused, though the build time alone would let it through.
func TestFloorSurvivesARestart(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second) // synced: the floor is now
	seen := r.clock.Now()
	r.clock.Advance(2 * time.Minute)
	r.cycle(time.Second)
	r.restart() // Close-less restart: the floor was persisted within a minute
	r.synced = false
	r.clock.Set(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC))
	r.restart()
	r.cycle(time.Second)
	sp := lease(1, seen.Add(-time.Hour), time.Hour, hearth.ModePower, 1000) // ended when the floor was seen
	if ack := r.ctl.Submit(sp, r.clock.Instant()); ack.Result != hearth.ResultExpired {
		t.Errorf("ack %+v, want expired by the persisted floor", ack)
	}
}

// TestFallbackSurvivesARestart: a lease whose fallback is idle ends; after
// a restart the agent runs idle, and the lease_ended event says idle.
func TestFallbackSurvivesARestart(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	sp := lease(1, r.clock.Now(), time.Minute, hearth.ModePower, 1000)
	sp.Fallback = hearth.ModeIdle
	r.ctl.Submit(sp, r.clock.Instant())
	r.cycle(30 * time.Second)
	// Down for longer than the lease, on an unsynced clock: it ends at
	// the restart, and its fallback runs.
	r.synced = false
	r.clock.Advance(time.Hour)
	r.restart()
	r.cycle(time.Second)
	ended := r.events(hearth.EventLeaseEnded)
	if len(ended) != 1 || ended[0]["fallback"] != "idle" {
		t.Fatalf("lease_ended %v, want one with fallback idle", ended)
	}
	if st := r.ctl.State(); st.Mode != hearth.ModeIdle {
		t.Errorf("after the restart the agent runs %s, the event said idle", st.Mode)
	}
	r.restart()
	r.cycle(time.Second)
	if st := r.ctl.State(); st.Mode != hearth.ModeIdle {
		t.Errorf("after a second restart the agent runs %s, want the fallback idle", st.Mode)
	}
}

// TestRedeliveredLeaseThatIsNotRunningIsNotADuplicate: after a restart on
// an unsynced clock ends the lease, the broker redelivers it: the ack must
// not say duplicate (a no-op that runs), but that it is over.
func TestRedeliveredLeaseThatIsNotRunningIsNotADuplicate(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	sp := lease(4, r.clock.Now(), time.Hour, hearth.ModePower, 1000)
	r.ctl.Submit(sp, r.clock.Instant())
	r.cycle(time.Second)
	if got := r.ctl.Submit(sp, r.clock.Instant()); got.Result != hearth.ResultDuplicate {
		t.Fatalf("resent while running: %s, want duplicate", got.Result)
	}
	r.synced = false
	r.restart()
	if _, ok := r.ctl.Lease(); ok {
		t.Fatal("resumed on an unsynced clock")
	}
	got := r.ctl.Submit(sp, r.clock.Instant())
	if got.Result != hearth.ResultExpired || got.Reason != hearth.ReasonEnded {
		t.Errorf("redelivered after it ended: %+v, want expired, reason ended", got)
	}
	r.cycle(time.Second)
	if r.discharging() {
		t.Error("the redelivered lease runs")
	}
}

// TestRevokedKeyEndsItsLease: revoking the key a running lease was signed
// with ends it at once, with an event naming the key.
func TestRevokedKeyEndsItsLease(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	sp := lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 1000)
	sp.KeyID = "ops-1"
	if ack := r.ctl.Submit(sp, r.clock.Instant()); ack.KeyID != "ops-1" {
		t.Errorf("ack %+v does not name the key", ack)
	}
	for range 2 {
		r.cycle(time.Second)
	}
	if r.ctl.Revoke([]string{"ops-2"}) {
		t.Fatal("revoking another key ended the lease")
	}
	if !r.ctl.Revoke([]string{"ops-1"}) {
		t.Fatal("revoking its key did not end the lease")
	}
	r.cycle(time.Second)
	ended := r.events(hearth.EventLeaseEnded)
	if len(ended) != 1 || ended[0]["reason"] != "key_revoked" || ended[0]["key_id"] != "ops-1" {
		t.Errorf("lease_ended %v, want reason key_revoked, key ops-1", ended)
	}
	if r.discharging() {
		t.Error("the device still follows a lease signed by a revoked key")
	}
}

// TestVersionLockoutHasAWayOut: a lease at the highest version there is
// locks every later one out as stale; the local reset lets the cloud start
// numbering again, and says so in an event.
func TestVersionLockoutHasAWayOut(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	r.ctl.Submit(lease(^uint64(0), r.clock.Now(), time.Minute, hearth.ModeIdle, 0), r.clock.Instant())
	if got := r.ctl.Submit(lease(5, r.clock.Now(), time.Hour, hearth.ModePower, 1000), r.clock.Instant()); got.Result != hearth.ResultStale {
		t.Fatalf("after version 2^64-1: %s, want stale", got.Result)
	}
	if old := r.ctl.ResetVersion(); old != ^uint64(0) {
		t.Errorf("reset forgot version %d", old)
	}
	r.restart() // the reset is persisted
	if got := r.ctl.Submit(lease(5, r.clock.Now(), time.Hour, hearth.ModePower, 1000), r.clock.Instant()); got.Result != hearth.ResultApplied {
		t.Errorf("after the reset: %+v, want applied", got)
	}
	if ev := r.events(hearth.EventVersionReset); len(ev) != 1 {
		t.Errorf("version_reset events %v, want one", ev)
	}
}
