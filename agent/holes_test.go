package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// logBuffer is a log destination safe for the agent's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCorruptHolesAreLoggedAndLearnedAgain: the learned holes kept for a
// device in the state file cannot be read. The agent says so, naming the
// file and that it starts with no known holes, and runs: the device is
// polled, the register it refuses is learned again, and what is kept for
// it is readable once more.
func TestCorruptHolesAreLoggedAndLearnedAgain(t *testing.T) {
	s, addr := harness.StartSim(t, sim.Config{InitialSoC: 60, Serial: "HOLES-CORRUPT"})
	if err := s.Refuse(103, "TmpOt"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, stateFile)
	if err := os.WriteFile(state, []byte(`{"holes.battery": "{\"identity\": {\"serial\": \"HOLES-CO"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfigOf(t, "gw-holes", dir, filepath.Join(dir, "s.sock"), addr)
	cfg.Devices[0].PollInterval = config.Duration(100 * time.Millisecond)
	var logs logBuffer
	a, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)

	var kept drivers.LearnedHoles
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, ok, _ := a.leases.Meta(holesKey("battery"))
		d := a.Status().Devices[0]
		if ok && json.Unmarshal([]byte(v), &kept) == nil && len(kept.Holes) > 0 && d.Up && d.Polls >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: device %+v, holes kept %q; want it polled and the refused register learned again\nlog:\n%s", d, v, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if kept.Identity.Serial != "HOLES-CORRUPT" {
		t.Errorf("holes kept for serial %q, want HOLES-CORRUPT", kept.Identity.Serial)
	}
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "learned register holes unreadable") {
			line = l
		}
	}
	for _, want := range []string{"level=WARN", "starting with no known holes", "device=battery", fmt.Sprintf("path=%s", state)} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q\nlog:\n%s", line, want, logs.String())
		}
	}
}
