package hearth_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestScriptsWaitForTheDpkgLock: every apt-get that installs or updates in
// scripts/ waits for another apt (an unattended upgrade) to release the
// dpkg lock instead of failing at once.
func TestScriptsWaitForTheDpkgLock(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("scripts/*.sh")
	if len(files) == 0 {
		t.Fatal("no scripts found")
	}
	call := regexp.MustCompile(`^\s*(\$sudo\s+|sudo\s+)?(DEBIAN_FRONTEND=\S+\s+)?apt-get\s.*\b(update|install)\b`)
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if !call.MatchString(line) || strings.Contains(line, "echo") {
				continue
			}
			n++
			if !strings.Contains(line, "DPkg::Lock::Timeout") && !strings.Contains(line, `"${lock[@]}"`) {
				t.Errorf("%s:%d: apt-get without DPkg::Lock::Timeout: %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
	if n < 4 {
		t.Errorf("found %d apt-get calls; the check does not see them", n)
	}
}
