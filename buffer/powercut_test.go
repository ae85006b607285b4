package buffer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/internal/powercut"
)

// These tests lose power under a process that holds the buffer open: a
// child (this test binary, run again) writes and says what it got, is
// SIGKILLed, and the power-cut file system undoes everything not synced.
// Built with -tags nofsync they fail: that is what they are for.

// cutUnder runs the child named by mode against dir on a power-cut file
// system, waits for its line of output, kills it, cuts the power and
// returns the line.
func cutUnder(t *testing.T, mode string) (dir, line string) {
	t.Helper()
	fsys := powercut.MountTemp(t)
	mnt := fsys.Dir()
	child := exec.Command(os.Args[0], "-test.run=^TestPowerCutChild$")
	child.Env = append(os.Environ(), "BUFFER_POWERCUT_CHILD="+mode+":"+mnt)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err = bufio.NewReader(out).ReadString('\n')
	child.Process.Kill()
	child.Wait()
	if err != nil {
		t.Fatalf("child %s: %v", mode, err)
	}
	n, err := fsys.Cut()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("power cut under the %s child: %d unsynced changes undone", mode, n)
	return mnt, strings.TrimSpace(line)
}

// TestPowerCutChild is the child of the power-cut tests; run on its own
// it does nothing.
func TestPowerCutChild(t *testing.T) {
	mode, dir, ok := strings.Cut(os.Getenv("BUFFER_POWERCUT_CHILD"), ":")
	if !ok {
		return
	}
	st, err := Open(filepath.Join(dir, "hearth.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "reserve":
		if _, _, err := st.ReserveSeqs(100); err != nil {
			t.Fatal(err)
		}
		_, last, err := st.ReserveSeqs(100)
		if err != nil {
			t.Fatal(err)
		}
		// Seqs of the block are handed out now: live readings carry them.
		fmt.Println(last)
	case "state":
		s, err := OpenState(filepath.Join(dir, "state.json"), st, nil)
		if err != nil {
			t.Fatal(err)
		}
		for v := 1; v <= 3; v++ {
			if err := s.SetMeta("safety.highest_version", strconv.Itoa(v)); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Println(3)
	}
	select {}
}

// TestReservationSurvivesPowerCut: seqs handed out from a reservation are
// never handed out again after a power cut; the block is a not_stored gap.
func TestReservationSurvivesPowerCut(t *testing.T) {
	dir, line := cutUnder(t, "reserve")
	reserved, err := strconv.ParseUint(line, 10, 64)
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	st := openTest(t, filepath.Join(dir, "hearth.db"), Options{})
	first, _, err := st.ReserveSeqs(10)
	if err != nil {
		t.Fatal(err)
	}
	if first <= reserved {
		t.Errorf("after the power cut the next reservation starts at %d: seqs up to %d were handed out before it", first, reserved)
	}
	gaps := pendingGaps(t, st)
	if len(gaps) != 1 || gaps[0].FromSeq != 1 || gaps[0].ToSeq != reserved || gaps[0].Reason != GapNotStored {
		t.Errorf("gap events after the cut: %+v, want one not_stored gap 1..%d", gaps, reserved)
	}
}

// TestStateSurvivesPowerCut: a value SetMeta returned for is there after a
// power cut.
func TestStateSurvivesPowerCut(t *testing.T) {
	dir, line := cutUnder(t, "state")
	st := openTest(t, filepath.Join(dir, "hearth.db"), Options{})
	s, err := OpenState(filepath.Join(dir, "state.json"), st, nil)
	if err != nil {
		t.Fatalf("state after the power cut: %v", err)
	}
	wantMeta(t, s, "safety.highest_version", line)
}
