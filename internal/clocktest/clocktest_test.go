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
