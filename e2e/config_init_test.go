package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigInitFolderAndAnswers runs `hearth config init` as an
// installer on a fresh gateway: a missing folder is made, a serial port
// for the device means transport rtu, a folder that cannot be made is
// reported with what to do before anything is asked, and answers the
// config refuses are printed back as a command to run again.
func TestConfigInitFolderAndAnswers(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "etc", "hearth", "hearth.yaml")
	args := []string{"config", "init", "--gateway-id", "gw-init", "--broker", "tcp://127.0.0.1:1883", "--device-address", "/dev/ttyUSB0"}
	if stdout, stderr, code := hearthCLI(t, nil, append(args, "--out", out)...); code != 0 {
		t.Fatalf("config init into a missing folder: exit %d\n%s%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(data), "transport: rtu") {
		t.Errorf("written config (%v) lacks transport rtu for /dev/ttyUSB0:\n%s", err, data)
	}
	if _, stderr, code := hearthCLI(t, nil, "config", "check", out); code != 0 {
		t.Errorf("config check of the written file: exit %d: %s", code, stderr)
	}

	_, stderr, code := hearthCLI(t, nil, append(args, "--out", "/proc/hearth-none/hearth.yaml")...)
	if code != 1 || !strings.Contains(stderr, "cannot create /proc/hearth-none") || !strings.Contains(stderr, "--out FILE") {
		t.Errorf("config init into a folder that cannot be made: exit %d: %s", code, stderr)
	}

	bad := filepath.Join(t.TempDir(), "hearth.yaml")
	_, stderr, code = hearthCLI(t, nil, "config", "init", "--gateway-id", "gw init", "--broker", "tcp://127.0.0.1:1883",
		"--device-address", "192.0.2.7:502", "--out", bad)
	if code != 3 || !strings.Contains(stderr, "hearth config init --gateway-id 'gw init' --broker tcp://127.0.0.1:1883 --transport tcp --device-address 192.0.2.7:502") {
		t.Errorf("config init with a refused gateway id: exit %d; want 3 and the answers as a command:\n%s", code, stderr)
	}
}
