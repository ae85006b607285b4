package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/config"
)

// TestNewFailsCleanly: a start that fails part-way returns its error and
// closes what it opened, without a panic.
func TestNewFailsCleanly(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("hearth.yaml", []byte("gateway_id: gw-new\ndevices:\n  - {name: battery, address: \"127.0.0.1:1\"}\nuplink: {broker: \"tcp://127.0.0.1:1\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	cfg.DataDir = filepath.Join(blocker, "data") // a file where a folder should be
	a, err := New(cfg, nil)
	if err == nil || a != nil || !strings.Contains(err.Error(), "data_dir") {
		t.Fatalf("New on an impossible data_dir: agent %v, err %v; want no agent and a data_dir error", a, err)
	}
}
