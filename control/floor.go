package control

import (
	"time"

	"github.com/hearth-energy/hearth"
)

// metaFloor is the meta key of the persisted floor.
const metaFloor = "clock.floor"

// floorPersistEvery bounds how far the floor may run ahead of its
// persisted value before it is written again: a restart loses at most this
// much of it.
const floorPersistEvery = time.Minute

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
	if !f.suspect {
		f.raise(now, now.Wall)
	}
	return step
}

// confirm takes the issued_at of a verified signed lease received at now:
// it raises the floor (less skew), and when the cloud's clock agrees with
// the wall clock within skew, ends the doubt a step cast on it.
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
