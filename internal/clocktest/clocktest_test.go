package clocktest

import (
	"testing"
	"time"
)

func TestClockMovesOnlyWhenTold(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	c := New(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want %v", got, t0)
	}
	c.Advance(90 * time.Second)
	c.Advance(-30 * time.Second)
	if got, want := c.Now(), t0.Add(time.Minute); !got.Equal(want) {
		t.Errorf("after +90s and -30s: %v, want %v", got, want)
	}
	c.Set(t0.AddDate(0, 0, 1))
	if got := c.Now(); !got.Equal(t0.AddDate(0, 0, 1)) {
		t.Errorf("after Set: %v", got)
	}
}

func TestStepWallLeavesTheMonotonicClock(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	c := New(t0)
	before := c.Instant()
	c.StepWall(-time.Hour)
	c.Advance(time.Second)
	after := c.Instant()
	if got := after.Sub(before); got != time.Second {
		t.Errorf("monotonic clock moved %v across a wall step and a second, want 1s", got)
	}
	if got, want := after.Wall, t0.Add(time.Second-time.Hour); !got.Equal(want) {
		t.Errorf("wall clock %v, want %v", got, want)
	}
}

func TestTimersFireOnlyWhenAdvanced(t *testing.T) {
	c := New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := c.Hearth()
	tm := h.NewTimer(2 * time.Second)
	tk := h.NewTicker(time.Second)
	fired := func(ch <-chan time.Time) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	c.Advance(999 * time.Millisecond)
	if fired(tm.C()) || fired(tk.C()) {
		t.Fatal("fired before its time")
	}
	c.Advance(time.Millisecond)
	if fired(tm.C()) || !fired(tk.C()) {
		t.Fatal("at 1 s: want the ticker only")
	}
	c.StepWall(time.Hour) // the wall clock moves no timer
	if fired(tm.C()) || fired(tk.C()) {
		t.Fatal("a wall clock step fired a timer")
	}
	c.Advance(time.Second)
	if !fired(tm.C()) || !fired(tk.C()) {
		t.Fatal("at 2 s: want both")
	}
	if tm.Reset(time.Second); fired(tm.C()) {
		t.Fatal("a reset timer fired at once")
	}
	tk.Stop()
	c.Advance(5 * time.Second)
	if !fired(tm.C()) || fired(tk.C()) {
		t.Fatal("after 5 s: want the reset timer, not the stopped ticker")
	}
}
