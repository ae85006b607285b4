package agent

import (
	"github.com/hearth-energy/hearth/config"
	"os"
	"sort"
	"testing"

	"github.com/hearth-energy/hearth/drivers"
)

// Profiles in the config decide each device's driver, and only SunSpec
// devices (the ones with model 124 storage controls) are controlled.
func TestDevicesFollowTheirProfiles(t *testing.T) {
	t.Parallel()
	// As the golden test does: the file's relative profile paths are
	// taken from the folder of the name given, here the package's.
	data, err := os.ReadFile("../config/testdata/config/profiles_ok.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("../config/profiles_ok.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.DiagSocket = cfg.DataDir + "/hearth.sock"
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.closeAll)
	kinds := map[string]string{}
	for _, d := range a.devices {
		switch drv := d.drv.(type) {
		case *drivers.SunSpecDevice:
			kinds[d.cfg.Name] = "sunspec"
		case *drivers.ProfileDevice:
			kinds[d.cfg.Name] = d.profile
			if len(drv.Plan()) == 0 {
				t.Errorf("%s: profile device plans no reads", d.cfg.Name)
			}
		default:
			t.Errorf("%s: driver %T", d.cfg.Name, drv)
		}
	}
	want := map[string]string{"battery": "sunspec", "inverter": "sungrow_sh", "sim": "hearthsim", "meter": "vendor_meter"}
	for name, k := range want {
		if kinds[name] != k {
			t.Errorf("device %s: driver %q, want %q", name, kinds[name], k)
		}
	}
	if len(a.buses) != 3 {
		t.Errorf("%d links opened, want 3 (inverter and sim share /dev/ttyUSB0)", len(a.buses))
	}
	var controlled []string
	for _, name := range a.ctl.Devices() {
		controlled = append(controlled, name)
	}
	sort.Strings(controlled)
	if len(controlled) != 1 || controlled[0] != "battery" {
		t.Errorf("controlled devices %v, want [battery] (the only SunSpec device that is not the meter)", controlled)
	}
	if got := a.birth().Profile; got != "sunspec,sungrow_sh,hearthsim,vendor_meter" {
		t.Errorf("birth profile %q", got)
	}
}
