package hw

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestClockOffsetFileShiftsTheWallClockOnly: with the offset file set, the
// wall clock moves by its content while the monotonic clock does not, as
// with a real clock step.
func TestClockOffsetFileShiftsTheWallClockOnly(t *testing.T) {
	c := offsetClock(t, "-1h\n")
	real := time.Now()
	got := c.Now()
	if d := real.Sub(got.Wall); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("wall clock %v is %v behind real time, want about 1h", got.Wall, d)
	}
	if got.Mono < 0 || got.Mono > time.Minute {
		t.Errorf("monotonic clock %v: the offset moved it", got.Mono)
	}
	if el := c.Now().Sub(got); el < 0 || el > time.Minute {
		t.Errorf("two readings of the shifted clock are %v apart, want a moment", el)
	}
	if plain := NewClock().Wall(); time.Since(plain) > time.Minute {
		t.Errorf("without an offset file the clock is not time.Now: %v", plain)
	}
}

// TestClockOffsetFileCanSayUnsynced: "… unsynced" makes the agent take
// its wall clock for unsynchronised, as after a boot with no NTP.
func TestClockOffsetFileCanSayUnsynced(t *testing.T) {
	c := offsetClock(t, "-490000h unsynced\n")
	if !c.labUnsynced() {
		t.Error("the offset file says unsynced; the clock does not")
	}
	if y := c.Wall().Year(); y > 1971 {
		t.Errorf("wall clock in %d, want about 1970", y)
	}
}

// offsetClock is a clock reading the lab offset file, which holds content.
func offsetClock(t *testing.T, content string) *Clock {
	t.Helper()
	path := filepath.Join(t.TempDir(), "offset")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c := NewClock()
	c.path = path
	return c
}
