package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWallClockOffsetFile: with the offset file set, the wall clock moves
// by its content while durations between readings of it do not.
func TestWallClockOffsetFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	if err := os.WriteFile(path, []byte("-1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &wallClock{path: path}
	real := time.Now()
	got := c.Now()
	if d := real.Sub(got.Round(0)); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("wall clock %v is %v behind real time, want about 1h", got, d)
	}
	if el := c.Now().Sub(got); el < 0 || el > time.Minute {
		t.Errorf("two readings of the shifted clock are %v apart, want a moment", el)
	}
	if plain := (&wallClock{}).Now(); time.Since(plain.Round(0)) > time.Minute {
		t.Errorf("without an offset file the clock is not time.Now: %v", plain)
	}
}
