package control

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/safety"
)

// unguardedDevice is a plainDevice with no revert timer of its own: what
// it is given it holds until told otherwise, however long that is.
type unguardedDevice struct{ *plainDevice }

func (unguardedDevice) Guarded() bool { return false }

// last is the last command the device took.
func (d *plainDevice) last() safety.Approved {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got
}

func setDown(d *plainDevice, down bool) {
	d.mu.Lock()
	d.down = down
	d.mu.Unlock()
}

// A device with no timeout of its own is commanded at most its cap; while
// it cannot be read or written it counts at its last command for as long
// as that lasts, not zero once RevertTimeout has passed; past the hold
// bound the agent reports the power it may hold, and releases it at the
// first write that goes through.
func TestUnguardedDeviceHoldsUntilReleased(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.SiteMaxDischargeW = new(hearth.Watts(3000))
	lim.UnguardedMaxW = map[string]hearth.Watts{"battery2": 800}
	r := newSiteRig(t, lim, func(d *plainDevice) Device { return unguardedDevice{d} })
	r.gridW = -5000 // a house that takes all of it
	for range 3 {
		r.cycle()
	}
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 3000), r.clock.Instant())
	for range 10 {
		r.cycle()
	}
	if r.b1.holds() != 2200 || r.b2.holds() != 800 {
		t.Fatalf("3000 W with battery2 capped at 800 W: battery1 %v, battery2 %v; want 2200 W and 800 W", r.b1.holds(), r.b2.holds())
	}

	setDown(r.b2, true)
	bound := unguardedDevice{r.b2}.RevertTimeout()
	for range int(bound/time.Second) + 30 {
		r.cycle()
		if r.b1.holds() > 2200 {
			t.Fatalf("battery2 unreachable, holding 800 W for all the agent knows: battery1 given %v, want at most 2200 W (site cap 3000 W)", r.b1.holds())
		}
	}
	ds := r.ctl.State().Devices["battery2"]
	if ds.MayHoldW == nil || *ds.MayHoldW != 800 {
		t.Errorf("state of battery2 %+v, want may_hold_w 800", ds)
	}
	var reported []map[string]any
	for _, e := range r.events(hearth.EventWriteFailed) {
		if e["may_hold_w"] != nil {
			reported = append(reported, e)
		}
	}
	if len(reported) != 1 || reported[0]["device"] != "battery2" || reported[0]["may_hold_w"] != 800.0 {
		t.Errorf("write_failed events with may_hold_w: %v, want one naming battery2 at 800 W", reported)
	}

	setDown(r.b2, false)
	r.cycle()
	if got := r.b2.last(); got.Mode() != hearth.ModeAuto {
		t.Errorf("battery2 back after the hold bound: first write %s, want the release", got)
	}
	if ds := r.ctl.State().Devices["battery2"]; ds.MayHoldW != nil {
		t.Errorf("battery2 released: state still says may_hold_w %v", *ds.MayHoldW)
	}
	for range 10 {
		r.cycle()
	}
	if r.b2.holds() != 800 {
		t.Errorf("battery2 released and read again: holds %v, want the lease's 800 W again", r.b2.holds())
	}
}

// An unguarded device that is read but cannot be written holds its last
// command, whatever the lease asks now: past the hold bound the agent
// reports it, and releases it at the first write that goes through.
func TestUnguardedDeviceThatCannotBeWritten(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.UnguardedMaxW = map[string]hearth.Watts{"battery2": 800}
	r := newSiteRig(t, lim, func(d *plainDevice) Device { return unguardedDevice{d} })
	r.gridW = -5000
	r.cycle()
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 1000), r.clock.Instant())
	for range 10 {
		r.cycle()
	}
	if r.b2.holds() != 500 {
		t.Fatalf("1000 W over two: battery2 holds %v, want 500 W", r.b2.holds())
	}
	r.b2.mu.Lock()
	r.b2.noWrite = true
	r.b2.mu.Unlock()
	r.ctl.Submit(lease(2, r.clock.Now(), time.Hour, hearth.ModePower, 1400), r.clock.Instant())
	bound := unguardedDevice{r.b2}.RevertTimeout()
	for range int(bound/time.Second) + 5 {
		r.cycle()
	}
	ds := r.ctl.State().Devices["battery2"]
	if ds.MayHoldW == nil || *ds.MayHoldW != 500 {
		t.Errorf("battery2 read but not written for %s: state %+v, want may_hold_w 500", bound, ds)
	}
	r.b2.mu.Lock()
	r.b2.noWrite = false
	r.b2.mu.Unlock()
	r.cycle()
	if got := r.b2.last(); got.Mode() != hearth.ModeAuto {
		t.Errorf("battery2 writable again after the hold bound: first write %s, want the release", got)
	}
}
