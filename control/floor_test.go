package control

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

func TestFloor(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(wall time.Time, mono time.Duration) hearth.Instant { return hearth.Instant{Wall: wall, Mono: mono} }
	var f timeFloor

	// Unsynchronised readings never raise it, whatever they say.
	f.observe(at(time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC), time.Second), false)
	if got := f.now(at(t0, 2*time.Second)); !got.IsZero() {
		t.Fatalf("an unsynced reading raised the floor to %s", got)
	}
	// A synchronised one does, and the floor moves on with the monotonic
	// clock, not with the wall clock.
	f.observe(at(t0, 10*time.Second), true)
	if got := f.now(at(t0.Add(-time.Hour), 70*time.Second)); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("a minute later, wall clock an hour back: floor %s, want %s", got, t0.Add(time.Minute))
	}
	// A step forward a day while synced does not raise it...
	if step := f.observe(at(t0.Add(24*time.Hour+time.Minute), 70*time.Second), true); step < 23*time.Hour {
		t.Errorf("step %s not seen", step)
	}
	f.observe(at(t0.Add(24*time.Hour+2*time.Minute), 130*time.Second), true)
	if got := f.now(at(t0, 130*time.Second)); !got.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("after a step forward a day: floor %s, want it where time is, %s", got, t0.Add(2*time.Minute))
	}
	// ...nor does the step back, which lowers nothing either...
	f.observe(at(t0.Add(3*time.Minute), 190*time.Second), true)
	if got := f.now(at(t0, 190*time.Second)); !got.Equal(t0.Add(3 * time.Minute)) {
		t.Errorf("after the step back: floor %s", got)
	}
	// ...until a signed lease shows the cloud agrees with the wall clock.
	f.confirm(at(t0.Add(4*time.Minute), 250*time.Second), t0.Add(4*time.Minute-time.Second), 30*time.Second)
	f.observe(at(t0.Add(10*time.Minute), 610*time.Second), true)
	if got := f.now(at(t0, 610*time.Second)); !got.Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("after the confirmation: floor %s, want the wall clock again", got)
	}
	// A signed lease's issue time raises it, less the skew.
	f.confirm(at(t0, 610*time.Second), t0.Add(time.Hour), 30*time.Second)
	if got := f.now(at(t0, 610*time.Second)); !got.Equal(t0.Add(time.Hour - 30*time.Second)) {
		t.Errorf("after a lease issued an hour ahead: floor %s", got)
	}
}

// TestFloorIgnoresAClockFarAhead: a synchronised reading more than a day
// ahead of the floor does not raise it by itself; a verified lease whose
// issue time agrees with that clock does.
func TestFloorIgnoresAClockFarAhead(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(wall time.Time, mono time.Duration) hearth.Instant { return hearth.Instant{Wall: wall, Mono: mono} }
	var f timeFloor
	f.raise(at(t0, 0), t0) // the build time
	year := t0.Add(365 * 24 * time.Hour)
	f.observe(at(year, time.Second), true)
	if got := f.now(at(year, time.Second)); !got.Equal(t0.Add(time.Second)) || !f.ahead {
		t.Fatalf("a synced clock a year ahead: floor %s (ahead %v), want %s and ahead", got, f.ahead, t0.Add(time.Second))
	}
	// A clock a few hours ahead of the floor is time passing: it raises.
	var g timeFloor
	g.raise(at(t0, 0), t0)
	g.observe(at(t0.Add(5*time.Hour), time.Second), true)
	if got := g.now(at(t0, time.Second)); !got.Equal(t0.Add(5 * time.Hour)) {
		t.Errorf("a synced clock 5 h ahead of the floor: floor %s, want it raised to the clock", got)
	}
	// The cloud agrees with the clock a year ahead: now it is trusted.
	f.confirm(at(year.Add(time.Minute), time.Minute), year.Add(time.Minute), 30*time.Second)
	f.observe(at(year.Add(2*time.Minute), 2*time.Minute), true)
	if got := f.now(at(year, 2*time.Minute)); !got.Equal(year.Add(2 * time.Minute)) {
		t.Errorf("after a verified lease agreeing with the clock: floor %s, want %s", got, year.Add(2*time.Minute))
	}
}
