package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

// TestDemoReadsAsLinesAndNamesAWorkingStatusCommand runs `hearthsim demo`
// until its lease is acked: its output is one worded line per reading,
// event, ack and state change (no raw JSON), the ack of the demo lease is
// among them, and the status command it names works against the running
// demo.
func TestDemoReadsAsLinesAndNamesAWorkingStatusCommand(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out harness.SyncBuffer
	cmd := exec.CommandContext(ctx, hearthsimBin(t), "demo", "--agent", hearthBin)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("the demo did not stop within 20 s of SIGINT")
		}
	}()

	ack := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  ack      lease demo-lease v1: clamped by max_discharge_w, applying 2500 W`)
	deadline := time.Now().Add(60 * time.Second)
	for !ack.MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no ack of the demo lease within 60 s:\n%s", out.String())
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the demo ended (%v):\n%s", err, out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}

	m := regexp.MustCompile(`(?m)^  (\S+) status --config (\S+)$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("the demo does not name the status command:\n%s", out.String())
	}
	if m[1] != hearthBin {
		t.Errorf("the status command names %s, not the agent's binary %s", m[1], hearthBin)
	}
	if !strings.Contains(out.String(), "points --config "+m[2]) || !regexp.MustCompile(`local page: http://127\.0\.0\.1:\d+/`).MatchString(out.String()) {
		t.Errorf("the demo does not name the points command and the local page:\n%s", out.String())
	}
	stdout, stderr, code := runBinary(t, nil, m[1], "status", "--config", m[2])
	if code != 0 || !strings.Contains(stdout, "demo-lease") {
		t.Errorf("%s status --config %s while the demo runs: exit %d\n%s\n%s", m[1], m[2], code, stdout, stderr)
	}

	// After the banner's blank line, every line is a worded line.
	text := out.String()
	body := text[strings.Index(text, "\n\n")+2:]
	line := regexp.MustCompile(`^\d\d:\d\d:\d\d  (reading|state|event|ack|status|cloud) +\S`)
	reading := regexp.MustCompile(`reading  battery  SoC +\d+\.\d %   battery +-?\d+ W   AC +-?\d+ W   grid +\d+\.\d\d Hz   cell max +\d\.\d{3} V$`)
	var readings, states []string
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		switch {
		case strings.Contains(l, "{"):
			t.Errorf("a raw JSON line: %q", l)
		case !line.MatchString(l):
			t.Errorf("a line not of the demo's form: %q", l)
		case strings.Contains(l, "  reading  "):
			if !reading.MatchString(l) {
				t.Errorf("a reading without its columns and units: %q", l)
			}
			readings = append(readings, l)
		case strings.Contains(l, "  state  "):
			states = append(states, l[10:])
		}
	}
	if len(readings) < 3 {
		t.Errorf("%d readings in the demo's output:\n%s", len(readings), text)
	}
	for i := 1; i < len(states); i++ {
		if states[i] == states[i-1] {
			t.Errorf("the state printed twice without a change: %q", states[i])
		}
	}
	if !strings.Contains(text, "event    lease demo-lease v1 started: power 4000 W") {
		t.Errorf("no worded lease_started event:\n%s", text)
	}
}
