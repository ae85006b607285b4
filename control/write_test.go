package control

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"github.com/hearth-energy/hearth/safety"
)

// flakyWrites fails the writes to a real device while failing is set, as
// a bus that reads but cannot write would.
type flakyWrites struct {
	Device
	failing *atomic.Bool
}

func (f flakyWrites) Apply(ctx context.Context, a safety.Approved) (Readback, error) {
	if f.failing.Load() {
		return Readback{}, errors.New("write refused")
	}
	return f.Device.Apply(ctx, a)
}

// TestRampAfterFailedWrites: five seconds of failed writes under a 2500 W
// lease, ramp 1000 W/s. The first write that succeeds asks for what one
// step of ramp from what the device holds (0 W) allows, not 2500 W; and
// state reports what the device holds, not what was approved.
func TestRampAfterFailedWrites(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	r := &ctlRig{t: t, clock: clocktest.New(ctlT0), synced: true,
		wrap: func(d Device) Device { return flakyWrites{d, &failing} }}
	r.init()
	r.cycle(time.Second)
	failing.Store(true)
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 2500), r.clock.Instant())
	for range 5 {
		r.cycle(time.Second)
	}
	if st := r.ctl.State(); st.AppliedW != nil {
		t.Errorf("state says applied %v W while every write failed", *st.AppliedW)
	}
	failing.Store(false)
	r.cycle(time.Second)
	if s := r.sim.State(); s.BatteryW > 1000+1 {
		t.Errorf("first successful write after five seconds of failures: the device runs %v W, want at most one second of ramp (1000 W) from 0", s.BatteryW)
	}
	st := r.ctl.State()
	if st.AppliedW == nil || *st.AppliedW != hearth.Watts(r.sim.State().CommandW) {
		t.Errorf("state applied_w %v, want what the device holds, %v", st.AppliedW, r.sim.State().CommandW)
	}
}

// TestNotEffectiveIsAState: a device that cannot deliver what it holds
// (its own limit is lower) is reported once, in an event and in the
// state, however many times the command is refreshed; when it follows
// again, one event says so.
func TestNotEffectiveIsAState(t *testing.T) {
	t.Parallel()
	r := &ctlRig{t: t, clock: clocktest.New(ctlT0), synced: true,
		simCfg: &sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 800}}
	r.init()
	r.cycle(time.Second)
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 1500), r.clock.Instant())
	for range 600 { // ten minutes, the command refreshed every 10 s
		r.cycle(time.Second)
	}
	if n := len(r.events(hearth.EventNotEffective)); n != 1 {
		t.Errorf("%d not_effective events in ten minutes, want 1", n)
	}
	if st := r.ctl.State(); len(st.NotEffective) != 1 || st.NotEffective[0] != "battery" {
		t.Errorf("state not_effective %v, want [battery]", st.NotEffective)
	}
	r.ctl.Submit(lease(2, r.clock.Now(), time.Hour, hearth.ModePower, 700), r.clock.Instant())
	for range 30 {
		r.cycle(time.Second)
	}
	if n := len(r.events(hearth.EventEffective)); n != 1 {
		t.Errorf("%d effective events after the device could follow again, want 1", n)
	}
	if st := r.ctl.State(); len(st.NotEffective) != 0 {
		t.Errorf("state not_effective %v after it follows again", st.NotEffective)
	}
}

// TestLeaseDuringALocalOverride: a cloud lease that arrives while a field
// tech holds the battery idle is accepted, but the ack says what runs: 0
// W, because of the local override.
func TestLeaseDuringALocalOverride(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	if _, err := r.ctl.Override(hearth.ModeIdle, nil, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	ack := r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 2000), r.clock.Instant())
	if ack.Result != hearth.ResultClamped || ack.Reason != hearth.ReasonLocalOverride || ack.AppliedW == nil || *ack.AppliedW != 0 {
		t.Errorf("ack %+v, want clamped by local_override at 0 W", ack)
	}
}
