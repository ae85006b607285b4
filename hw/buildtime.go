package hw

import (
	"os"
	"runtime/debug"
	"time"

	"github.com/hearth-energy/hearth"
)

// Where a binary's build time was found (BuildStamp).
const (
	BuildFromStamp  = "stamp"  // hearth.BuildDate, stamped by make build and make release
	BuildFromVCS    = "vcs"    // the commit time Go records in the build info (vcs.time)
	BuildFromBinary = "binary" // the binary file's modification time, as the release installed it
	BuildFromNone   = "none"   // none of them: the agent has no floor under true time of its own
)

// earliestBuild is before any hearth binary was built: a time source
// saying earlier (a file stamped 1970 by a clock that never synced, or by
// an archive that kept no times) says nothing.
var earliestBuild = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// BuildStamp returns when this binary's sources were made, as a lower
// bound on true time, and where that came from: the stamp make build and
// make release give it (hearth.BuildDate), else the commit time Go records
// (vcs.time; absent with -buildvcs=false or outside a repository), else the
// binary file's own modification time (which a package install keeps from
// the release). With none of them it returns the zero time and
// BuildFromNone.
func BuildStamp() (time.Time, string) {
	if t, err := time.Parse(time.RFC3339, hearth.BuildDate); err == nil && t.After(earliestBuild) {
		return t.UTC(), BuildFromStamp
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key != "vcs.time" {
				continue
			}
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil && t.After(earliestBuild) {
				return t.UTC(), BuildFromVCS
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		if fi, err := os.Stat(exe); err == nil && fi.ModTime().After(earliestBuild) {
			return fi.ModTime().UTC(), BuildFromBinary
		}
	}
	return time.Time{}, BuildFromNone
}
