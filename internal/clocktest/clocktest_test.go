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
