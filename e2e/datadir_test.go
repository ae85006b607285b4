package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestSecondAgentRefused starts `hearth run` twice on one config: the
// second exits non-zero at once naming the first one's pid and the
// data_dir, publishes nothing (no offline status, no gap, no takeover of
// the first one's MQTT session), and leaves the first one's diagnostics
// socket alone, so `hearth status` still reaches the agent that runs.
func TestSecondAgentRefused(t *testing.T) {
	t.Parallel()
	const gw = "gw-lock"
	mq := harness.StartMosquitto(t)
	_, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "E2ELOCK"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, gw, mq.URL(), "200ms", []devSpec{{"battery", addr}})
	rec := harness.Subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	first := startAgent(t, cfg)
	rec.WaitFor(t, 30*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) >= 3 })
	boot := readings(t, rec.Messages(), gw)[0].Boot
	sock := filepath.Join(dir, "hearth.sock")
	before, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("the first agent's socket: %v", err)
	}
	mark := len(rec.Messages())

	second := harness.StartAgent(t, hearthBin, harness.AgentOptions{Config: cfg, Name: "second agent"})
	select {
	case <-second.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("the second agent on the same data_dir is still running after 15 s")
	}
	if err := second.Wait(); err == nil {
		t.Errorf("the second agent exited 0; want a non-zero exit")
	}
	want := fmt.Sprintf("another hearth (pid %d) holds %s", first.Pid(), dir)
	if log := second.Log(); !strings.Contains(log, want) {
		t.Errorf("the second agent's output does not say %q:\n%s", want, log)
	}
	// The first one goes on: readings of its boot keep arriving.
	rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool { return len(readings(t, m[mark:], gw)) >= 5 })

	for _, m := range rec.Messages()[mark:] {
		switch {
		case strings.HasSuffix(m.Topic, "/status") && strings.Contains(string(m.Payload), "offline"):
			t.Errorf("an offline status was published while the first agent ran: %s", m.Payload)
		case strings.HasSuffix(m.Topic, "/event"):
			var ev struct{ Type string }
			json.Unmarshal(m.Payload, &ev)
			if ev.Type == "gap" || strings.HasPrefix(ev.Type, "uplink_") {
				t.Errorf("event %s published while the second agent started: %s", ev.Type, m.Payload)
			}
		}
	}
	for _, r := range readings(t, rec.Messages()[mark:], gw) {
		if r.Boot != boot {
			t.Errorf("reading seq %d from boot %s, not the first agent's %s", r.Seq, r.Boot, boot)
			break
		}
	}
	after, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("the first agent's socket is gone after the second start: %v", err)
	}
	if before.Sys().(*syscall.Stat_t).Ino != after.Sys().(*syscall.Stat_t).Ino {
		t.Errorf("the first agent's socket was replaced")
	}
	if out, errOut, code := runBinary(t, nil, hearthBin, "status", "--socket", sock, "--json"); code != 0 {
		t.Errorf("hearth status after the refused start: exit %d\n%s%s", code, out, errOut)
	}
	if err := first.Alive(); err != nil {
		t.Error(err)
	}
}
