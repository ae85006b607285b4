package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestSIGHUPDuringStartIsSurvived sends SIGHUP to `hearth run` from the
// moment its process has a disposition of its own for the signal (the
// program is loaded) until the agent answers on its diagnostics socket, five
// starts in a row. A reload asked for while the agent starts is a reload,
// never a hangup: every start must survive it, run, and stop cleanly.
func TestSIGHUPDuringStartIsSurvived(t *testing.T) {
	t.Parallel()
	const gw = "gw-hup"
	_, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "E2EHUP"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, gw, "tcp://127.0.0.1:1", "200ms", []devSpec{{"battery", addr}})
	sock := filepath.Join(dir, "hearth.sock")
	a := harness.StartAgent(t, hearthBin, harness.AgentOptions{Config: cfg, Name: "agent under SIGHUP", LogTail: 40})
	for start := 1; start <= 5; start++ {
		if start > 1 {
			a.Restart()
		}
		pid := a.Pid()
		if !waitDisposed(a, pid, syscall.SIGHUP) {
			t.Fatalf("start %d: the process never took SIGHUP from the default: %v", start, a.Alive())
		}
		sent := 0
		deadline := time.Now().Add(30 * time.Second)
		for {
			if err := a.Alive(); err != nil {
				t.Fatalf("start %d: after %d SIGHUPs during the start: %v", start, sent, err)
			}
			if syscall.Kill(pid, syscall.SIGHUP) == nil {
				sent++
			}
			// The agent answers once it runs; status may say degraded
			// (no broker here), which is still an answer.
			if sent%20 == 0 {
				if _, _, code := runBinary(t, nil, hearthBin, "status", "--socket", sock, "--json"); code == 0 || code == 6 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("start %d: the agent did not answer on %s within 30 s", start, sock)
			}
			time.Sleep(500 * time.Microsecond)
		}
		if err := a.Alive(); err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		if _, err := a.Stop(10 * time.Second); err != nil {
			t.Fatalf("start %d: stop after %d SIGHUPs: %v", start, sent, err)
		}
		t.Logf("start %d: survived %d SIGHUPs", start, sent)
	}
	if !strings.Contains(a.Log(), "setpoint keys reloaded") {
		t.Errorf("no SIGHUP was taken as a reload")
	}

	// Only the agent holds on to SIGHUP: a CLI command whose terminal
	// hangs up ends as any command does.
	a.Restart()
	waitAnswers(t, sock)
	watch := exec.Command(hearthBin, "status", "--watch", "--socket", sock)
	var out harness.SyncBuffer
	watch.Stdout, watch.Stderr = &out, &out
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	t.Cleanup(func() { watch.Process.Kill(); <-done })
	for end := time.Now().Add(20 * time.Second); out.String() == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("hearth status --watch printed nothing in 20 s")
		}
	}
	watch.Process.Signal(syscall.SIGHUP)
	select {
	case err := <-done:
		done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
			t.Errorf("hearth status --watch after SIGHUP: %v, want ended by the signal", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("hearth status --watch still runs 10 s after SIGHUP")
	}
}

// waitAnswers waits until an agent answers `hearth status` on sock.
func waitAnswers(t *testing.T, sock string) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, _, code := runBinary(t, nil, hearthBin, "status", "--socket", sock, "--json"); code == 0 || code == 6 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("no agent answers on %s after 30 s", sock)
		}
	}
}

// waitDisposed waits until process pid no longer leaves sig to the
// kernel's default action (sig is in its SigCgt or SigIgn mask in /proc):
// the first moment any program can take a signal. Before that (the
// dynamic loader at work) a SIGHUP ends any process. False if the process
// exits or 10 s pass first.
func waitDisposed(a *harness.Agent, pid int, sig syscall.Signal) bool {
	bit := uint64(1) << (uint(sig) - 1)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if a.Alive() != nil {
			return false
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err == nil {
			for line := range strings.SplitSeq(string(b), "\n") {
				rest, ok := strings.CutPrefix(line, "SigCgt:")
				if !ok {
					rest, ok = strings.CutPrefix(line, "SigIgn:")
				}
				if m, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64); ok && err == nil && m&bit != 0 {
					return true
				}
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
	return false
}
