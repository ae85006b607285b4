package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigRefusesFlappingBounds runs `hearth config check` and `hearth
// run` on a config whose loop would flap or whose limits would mean
// nothing (max_reading_age below the poll interval, effective_within and
// clock_skew of ten years, a charge temperature no cell reaches): both
// exit 3 naming each line, and run creates nothing. With those four lines
// taken out, the same config checks clean.
func TestConfigRefusesFlappingBounds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	head := "gateway_id: gw-bounds\n" + // 1
		"data_dir: " + data + "\n" + // 2
		"diag_socket: " + filepath.Join(dir, "hearth.sock") + "\n" + // 3
		"devices:\n" + // 4
		"  - name: battery\n" + // 5
		"    address: 127.0.0.1:502\n" + // 6
		"    poll_interval: 1s\n" + // 7
		"uplink:\n" + // 8
		"  broker: tcp://127.0.0.1:1883\n" + // 9
		"safety:\n" + // 10
		"  soc_min_pct: 10\n" // 11
	bad := "  max_reading_age: 500ms\n" + // 12
		"  effective_within: 87600h\n" + // 13
		"  clock_skew: 87600h\n" + // 14
		"  charge_temp_c_min: 200\n" // 15
	path := filepath.Join(dir, "bounds.yaml")
	if err := os.WriteFile(path, []byte(head+bad), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bounds.yaml:12: safety.max_reading_age: 500ms is below what device battery needs",
		"bounds.yaml:13: safety.effective_within: 87600h is above 5m",
		"bounds.yaml:14: safety.clock_skew: 87600h is outside 1s..10m",
		"bounds.yaml:15: safety.charge_temp_c_min: 200 is outside",
	}
	for _, args := range [][]string{{"config", "check", path}, {"run", "--config", path}} {
		out, errOut, code := runBinary(t, nil, hearthBin, args...)
		if code != 3 {
			t.Errorf("hearth %s: exit %d, want 3 (invalid config)\n%s%s", strings.Join(args[:1], " "), code, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(out+errOut, w) {
				t.Errorf("hearth %s does not say %q:\n%s%s", args[0], w, out, errOut)
			}
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the refused config got its data_dir created (stat: %v)", err)
	}
	if err := os.WriteFile(path, []byte(head), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runBinary(t, nil, hearthBin, "config", "check", path); code != 0 {
		t.Errorf("without the four lines: exit %d, want 0\n%s%s", code, out, errOut)
	}
}
