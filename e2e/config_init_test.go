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

// TestConfigCheckExplains: `hearth config check` names the key and the
// form of a value of the wrong type, and the key a typo was meant to be.
func TestConfigCheckExplains(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "hearth.yaml")
	if err := os.WriteFile(path, []byte("gateway_id: gw-x\ndevices:\n  - name: battery\n    adress: 127.0.0.1:502\n    unit_id: one\nuplink:\n  broker: tcp://127.0.0.1:1883\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := hearthCLI(t, nil, "config", "check", path)
	all := out + stderr
	for _, want := range []string{`:4: unknown key "adress" (did you mean "address"?)`, ":5: devices[0].unit_id: want a whole number, got `one`"} {
		if code != 3 || !strings.Contains(all, want) {
			t.Errorf("config check: exit %d, lacks %q:\n%s", code, want, all)
		}
	}
}
