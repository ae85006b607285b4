package hw

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// TestBuildStampPrefersTheStamp: a stamped build date wins; one before
// any hearth was built says nothing and the next source is taken (here,
// a test binary: vcs.time or the file's time, never the bogus stamp).
func TestBuildStampPrefersTheStamp(t *testing.T) {
	old := hearth.BuildDate
	t.Cleanup(func() { hearth.BuildDate = old })
	hearth.BuildDate = "2026-06-01T12:00:00Z"
	if got, from := BuildStamp(); !got.Equal(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)) || from != BuildFromStamp {
		t.Errorf("stamped: %s from %s, want the stamp", got, from)
	}
	hearth.BuildDate = "1970-01-01T00:00:00Z"
	if got, from := BuildStamp(); from == BuildFromStamp || (from != BuildFromNone && !got.After(earliestBuild)) {
		t.Errorf("a 1970 stamp: %s from %s, want it ignored", got, from)
	}
}
