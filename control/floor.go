package control

import (
	"time"

	"github.com/hearth-energy/hearth"
)

// Meta keys of the persisted floor, and of the issued_at of the last
// verified signed lease accepted (a source the floor is judged against).
const (
	metaFloor      = "clock.floor"
	metaLastSigned = "clock.last_signed"
)

// FloorInfo is the floor under true time as the controller holds it, for
// the status report.
type FloorInfo struct {
	// Floor is the lower bound on true time now; zero: none.
	Floor time.Time
	// WallAhead says the synchronised wall clock is more than a day ahead
	// of the floor: it does not raise the floor until a verified signed
	// lease agrees with it.
	WallAhead bool
	// Distrusted is the floor found far ahead of every other source and
	// dropped at Distrusted; zero when none was.
	Distrusted time.Time
}

// floorPersistEvery bounds how far the floor may run ahead of its
// persisted value before it is written again: a restart loses at most this
// much of it.
const floorPersistEvery = time.Minute

// floorLead is how far ahead of the floor a synchronised wall clock may
// be and still raise it by itself; and how far ahead of every other source
// (the synchronised wall clock, the build time, the last verified lease)
// a floor may be and still be trusted. A gateway's floor follows its wall
// clock to within a minute while it runs, so only a long downtime, a first
// start or a wrong clock puts them further apart: then the wall clock
// raises the floor once a verified signed lease shows that the cloud's
// clock agrees with it (confirm). One start with the clock a year ahead
// (a wrong RTC taken for synchronised, a wrong NTP server) must not refuse
// every lease for a year.
const floorLead = 24 * time.Hour

// stepTolerance is how far the synchronised wall clock may drift from the
// monotonic clock between two readings before the difference is taken for
// a step: far more than NTP's slewing, far less than a step.
const stepTolerance = 2 * time.Second

// timeFloor is a lower bound on true time that the agent keeps and
// persists. True time is at least each of: the last synchronised wall time
// plus the monotonic time since; the newest such time it ever recorded
// (persisted, so it survives a reboot into 1970); the binary's build time;
// the issued_at of every verified signed lease (less the allowed clock
// skew). A lower bound stays one as time passes, so the floor is kept as a
// value and the monotonic reading it held at, and moves on with the
// monotonic clock. A lease whose valid_until is not after the floor has
// expired, whatever the kernel says of the wall clock.
//
// Only times the agent has reason to trust raise it. Wall times read while
// unsynchronised never do: an RTC stuck in 2040 must not expire every
// lease until then. Nor do synchronised readings after the wall clock
// stepped (moved otherwise than the monotonic clock between two readings),
// until a verified signed lease shows the cloud's clock agrees: a clock
// stepped a day ahead and back must not refuse every lease for a day.
// The floor's owner serialises calls.
type timeFloor struct {
	at        time.Time     // the floor as of mono
	mono      time.Duration // the monotonic reading at which at held
	persisted time.Time     // the value last written to the store

	// The chain of synchronised readings: the last one, and whether the
	// wall clock stepped since the chain was last confirmed.
	last    hearth.Instant
	chained bool
	suspect bool
	// ahead says the last synchronised reading was more than floorLead
	// ahead of the floor, and so did not raise it.
	ahead bool
}

// now returns the floor at now.
func (f *timeFloor) now(now hearth.Instant) time.Time {
	if f.at.IsZero() {
		return time.Time{}
	}
	return f.at.Add(now.Mono - f.mono)
}

// raise makes t a lower bound at now, if it is above the current one.
func (f *timeFloor) raise(now hearth.Instant, t time.Time) {
	cur := f.now(now)
	if !t.After(cur) {
		if !cur.IsZero() {
			f.at, f.mono = cur, now.Mono
		}
		return
	}
	f.at, f.mono = t.UTC(), now.Mono
}

// observe takes one reading of the clocks. A synchronised reading raises
// the floor unless the wall clock has stepped; it returns the step, if
// this reading shows one (0 otherwise).
func (f *timeFloor) observe(now hearth.Instant, synced bool) (step time.Duration) {
	if !synced {
		f.chained = false
		return 0
	}
	if f.chained {
		d := now.Wall.Sub(f.last.Wall) - now.Sub(f.last)
		if d > stepTolerance || d < -stepTolerance {
			f.suspect, step = true, d
		}
	}
	f.last, f.chained = now, true
	cur := f.now(now)
	f.ahead = !cur.IsZero() && now.Wall.Sub(cur) > floorLead
	if !f.suspect && !f.ahead {
		f.raise(now, now.Wall)
	}
	return step
}

// set makes t the floor at now, lower or higher than it was: for a floor
// found distrusted, or reset by hand.
func (f *timeFloor) set(now hearth.Instant, t time.Time) {
	f.at, f.mono, f.ahead = t.UTC(), now.Mono, false
	if t.IsZero() {
		f.at = time.Time{}
	}
}

// confirm takes the issued_at of a verified signed lease received and
// accepted at now (never of a refused one): it raises the floor (less
// skew), and when the cloud's clock agrees with the wall clock within
// skew, ends the doubt a step, or a wall clock far ahead of the floor,
// cast on it.
func (f *timeFloor) confirm(now hearth.Instant, issued time.Time, skew time.Duration) {
	f.raise(now, issued.Add(-skew))
	if d := now.Wall.Sub(issued); f.chained && d <= skew+time.Minute && d >= -skew {
		f.suspect = false
		f.raise(now, now.Wall)
	}
}

// due reports whether the floor has moved far enough from its persisted
// value to be written again.
func (f *timeFloor) due(now hearth.Instant) bool {
	v := f.now(now)
	return !v.IsZero() && v.Sub(f.persisted) >= floorPersistEvery
}

// restoreFloorLocked sets the floor at start: from the persisted floor,
// the build time and the clock now, judged against the persisted issue
// time of the last verified lease.
func (c *Controller) restoreFloorLocked(now hearth.Instant, synced bool) error {
	st := c.opt.Store
	if v, ok, err := st.Meta(metaFloor); err != nil {
		return err
	} else if ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			c.floor.raise(now, t)
			c.floor.persisted = t
		}
	}
	if v, ok, err := st.Meta(metaLastSigned); err != nil {
		return err
	} else if ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			c.lastSigned = t.UTC()
		}
	}
	c.floor.raise(now, c.opt.BuildTime)
	c.floor.observe(now, synced)
	c.checkFloorLocked(now, synced)
	return nil
}

// checkFloorLocked distrusts a floor that is more than floorLead ahead of
// the synchronised wall clock, the build time and the last verified lease
// alike (one persisted by a start with a wrong clock, or by an older agent
// that let refused messages raise it): it drops it to the best of the other
// sources, says so in an event and in the status, and persists that.
func (c *Controller) checkFloorLocked(now hearth.Instant, synced bool) {
	fl := c.floor.now(now)
	if !synced || fl.IsZero() || fl.Sub(now.Wall) <= floorLead {
		return
	}
	for _, src := range []time.Time{c.opt.BuildTime, c.lastSigned} {
		if !src.IsZero() && fl.Sub(src) <= floorLead {
			return
		}
	}
	to := c.opt.BuildTime
	if ls := c.lastSigned.Add(-c.opt.Limits.ClockSkew); !c.lastSigned.IsZero() && ls.After(to) {
		to = ls
	}
	data := map[string]any{"floor": fl, "wall": now.Wall.UTC()}
	if !to.IsZero() {
		data["to"] = to
	}
	if !c.opt.BuildTime.IsZero() {
		data["build_time"] = c.opt.BuildTime
	}
	if !c.lastSigned.IsZero() {
		data["last_signed"] = c.lastSigned
	}
	c.log.Warn("clock floor far ahead of the synchronised clock, the build time and the last verified lease: distrusted", "floor", fl, "wall", now.Wall, "to", to)
	c.event(hearth.EventClockFloorDistrusted, data)
	c.floor.set(now, to)
	c.distrusted = fl
	c.writeFloorLocked(now)
}

// ResetFloor sets the floor under true time back to the binary's build
// time and forgets the last verified lease's issue time: the way out, at
// the gateway, of a floor so far ahead that every lease is expired. It
// records a clock_floor_reset event and returns the floor before and after.
func (c *Controller) ResetFloor() (from, to time.Time) {
	now := c.opt.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	from, to = c.floor.now(now), c.opt.BuildTime
	c.floor.set(now, to)
	c.lastSigned, c.distrusted = time.Time{}, time.Time{}
	if err := c.opt.Store.SetMeta(metaLastSigned, ""); err != nil {
		c.log.Error("persist last signed lease time", "err", err)
	}
	c.writeFloorLocked(now)
	data := map[string]any{"from": nil, "to": nil}
	if !from.IsZero() {
		data["from"] = from
	}
	if !to.IsZero() {
		data["to"] = to
	}
	c.log.Warn("clock floor reset", "from", from, "to", to)
	c.event(hearth.EventClockFloorReset, data)
	return from, to
}

// Floor reports the floor under true time as of now.
func (c *Controller) Floor() FloorInfo {
	now := c.opt.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return FloorInfo{Floor: c.floor.now(now), WallAhead: c.floor.ahead && c.opt.Synced(), Distrusted: c.distrusted}
}

// persistFloorLocked persists the floor as it is now, when there is one.
func (c *Controller) persistFloorLocked(now hearth.Instant) {
	if !c.floor.now(now).IsZero() {
		c.writeFloorLocked(now)
	}
}

// writeFloorLocked persists the floor as it is now, lower or higher than
// the value persisted (none: an empty value).
func (c *Controller) writeFloorLocked(now hearth.Instant) {
	v := c.floor.now(now)
	s := ""
	if !v.IsZero() {
		s = v.Format(time.RFC3339Nano)
	}
	if err := c.opt.Store.SetMeta(metaFloor, s); err != nil {
		c.log.Error("persist clock floor", "err", err)
		return
	}
	c.floor.persisted = v
}

// signedLocked notes a verified signed lease accepted at now: its issue
// time raises the floor, and is kept as a source the floor is judged by.
func (c *Controller) signedLocked(now hearth.Instant, issued time.Time) {
	c.floor.confirm(now, issued, c.opt.Limits.ClockSkew)
	if !issued.After(c.lastSigned) {
		return
	}
	c.lastSigned = issued.UTC()
	if err := c.opt.Store.SetMeta(metaLastSigned, c.lastSigned.Format(time.RFC3339Nano)); err != nil {
		c.log.Error("persist last signed lease time", "err", err)
	}
}
