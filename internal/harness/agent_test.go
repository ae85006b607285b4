package harness

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeAgent writes a shell script that stands in for the hearth binary:
// it prints its arguments and $FAKE_AGENT, then runs body.
func fakeAgent(t *testing.T, body string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hearth")
	script := "#!/bin/sh\necho \"args: $*\"\necho \"env: $FAKE_AGENT\"\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// untilTrue waits up to 20 s for cond; the bound only keeps a broken
// helper from hanging the test.
func untilTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 20 s for %s", what)
		}
	}
}

func TestAgentStopRestartKill(t *testing.T) {
	t.Parallel()
	bin := fakeAgent(t, "trap 'echo terminated; exit 0' TERM\necho ready\nwhile :; do sleep 0.05; done")
	a := StartAgent(t, bin, AgentOptions{Config: "/etc/hearth.yaml", Args: []string{"--log-level", "debug"},
		Env: []string{"FAKE_AGENT=set"}, SampleRSS: 10 * time.Millisecond})
	untilTrue(t, "the output", func() bool { return strings.Contains(a.Log(), "ready") })
	if !strings.Contains(a.Log(), "args: run --config /etc/hearth.yaml --log-level debug") {
		t.Errorf("log %q does not show the arguments", a.Log())
	}
	if !strings.Contains(a.Log(), "env: set") {
		t.Errorf("log %q does not show the extra environment", a.Log())
	}
	if err := a.Alive(); err != nil {
		t.Fatalf("Alive() = %v, want nil", err)
	}
	if a.Pid() <= 0 {
		t.Errorf("Pid() = %d", a.Pid())
	}
	untilTrue(t, "an RSS sample", func() bool { return a.PeakRSS() > 0 })
	if _, err := a.Stop(20 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !strings.Contains(a.Log(), "terminated") {
		t.Errorf("log %q: the process did not see SIGTERM", a.Log())
	}
	if err := a.Alive(); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Alive() after Stop = %v, want not running", err)
	}
	if took, err := a.Stop(time.Second); took != 0 || err != nil {
		t.Errorf("second Stop = %v, %v; want 0, nil", took, err)
	}

	first := a.Pid()
	a.Restart()
	if a.Pid() == first {
		t.Errorf("Restart kept pid %d", first)
	}
	if err := a.Alive(); err != nil {
		t.Fatalf("Alive() after Restart = %v", err)
	}
	untilTrue(t, "the second start's output", func() bool { return strings.Count(a.Log(), "ready") == 2 })
	a.Kill()
	select {
	case <-a.Exited():
	default:
		t.Fatal("Exited not closed after Kill")
	}
	var ee *exec.ExitError
	if err := a.Wait(); !errors.As(err, &ee) {
		t.Errorf("Wait after Kill = %v, want an exit error", err)
	}
	if n := a.Starts(); n != 2 {
		t.Errorf("Starts() = %d, want 2", n)
	}
}

func TestAgentExitsByItself(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, fakeAgent(t, "exit 3"), AgentOptions{Config: "c.yaml", Name: "agent gw-x"})
	var ee *exec.ExitError
	if err := a.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Wait() = %v, want exit status 3", err)
	}
	if err := a.Alive(); err == nil || !strings.Contains(err.Error(), "agent gw-x exited by itself: exit status 3") {
		t.Errorf("Alive() = %v, want it to say the agent exited by itself", err)
	}
	if _, err := a.Stop(time.Second); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Stop() = %v, want exit status 3", err)
	}
}

func TestAgentStopPastLimitKills(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "agent.log")
	// Ignored signals stay ignored across exec: sleep ignores SIGTERM.
	a := StartAgent(t, fakeAgent(t, "trap '' TERM\necho ready\nexec sleep 600"), AgentOptions{Config: "c.yaml", LogFile: log})
	untilTrue(t, "the output", func() bool { return strings.Contains(a.Log(), "ready") })
	if b, err := os.ReadFile(log); err != nil || !strings.Contains(string(b), "args: run --config c.yaml") {
		t.Errorf("log file: %q, %v", b, err)
	}
	_, err := a.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not exit within") {
		t.Fatalf("Stop() = %v, want the limit passed", err)
	}
	if err := a.Alive(); err == nil {
		t.Error("Alive() = nil after Stop killed the process")
	}
}

func TestReadRSS(t *testing.T) {
	t.Parallel()
	if kb, ok := ReadRSS(os.Getpid()); !ok || kb <= 0 {
		t.Errorf("ReadRSS(self) = %d, %v", kb, ok)
	}
	if _, ok := ReadRSS(-1); ok {
		t.Error("ReadRSS(-1) reported a value")
	}
}
