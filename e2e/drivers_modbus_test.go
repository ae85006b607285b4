package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/drivers/sim/ptypair"
	"github.com/hearth-energy/hearth/internal/harness"
)

var (
	simBinOnce sync.Once
	simBin     string
	simBinErr  error
)

// hearthsimBin builds cmd/hearthsim once for the package's tests.
func hearthsimBin(t *testing.T) string {
	t.Helper()
	simBinOnce.Do(func() {
		dir := filepath.Dir(hearthBin)
		simBin = filepath.Join(dir, "hearthsim")
		out, err := exec.Command("go", "build", "-o", simBin, "../cmd/hearthsim").CombinedOutput()
		if err != nil {
			simBinErr = err
			t.Logf("build hearthsim: %s", out)
		}
	})
	if simBinErr != nil {
		t.Fatalf("build hearthsim: %v", simBinErr)
	}
	return simBin
}

// startSimRTU runs `hearthsim --rtu` on one end of a pty pair and returns
// the other end for the client.
func startSimRTU(t *testing.T, args ...string) string {
	t.Helper()
	client, device := ptypair.Start(t)
	var out harness.SyncBuffer
	cmd := exec.Command(hearthsimBin(t), append([]string{"--rtu", device}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("hearthsim output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "serving Modbus RTU") {
		if time.Now().After(deadline) {
			t.Fatalf("hearthsim did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return client
}

// TestModbusCLIDirect reads and scans the simulator with `hearth modbus
// --direct` over TCP and over RTU on a pty.
func TestModbusCLIDirect(t *testing.T) {
	t.Parallel()
	_, tcpAddr := startSim(t, sim.Config{UnitID: 1, Serial: "TCP-1"})
	rtuDev := startSimRTU(t, "--unit", "7", "--serial", "RTU-7")

	for _, tc := range []struct {
		name, address, transport, serial string
		unit                             int
	}{
		{"tcp", tcpAddr, "tcp", "TCP-1", 1},
		{"rtu", rtuDev, "rtu", "RTU-7", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unit := itoa(tc.unit)
			out, errOut, code := hearthCLI(t, nil, "modbus", "read", "--direct", "--address", tc.address,
				"--transport", tc.transport, "--unit", unit, "--start", "40000", "--count", "4")
			if code != 0 {
				t.Fatalf("read: exit %d, stderr %s", code, errOut)
			}
			// The SunS marker, then model 1's header (id 1, length 66).
			for _, want := range []string{`40000\s+21365\s+0x5375`, `40001\s+28243\s+0x6e53`, `40002\s+1\s+0x0001`, `40003\s+66\s+0x0042`} {
				if !regexp.MustCompile(`(?m)^\s*` + want + `\s*$`).MatchString(out) {
					t.Errorf("read output lacks a line matching %q:\n%s", want, out)
				}
			}

			out, errOut, code = hearthCLI(t, nil, "modbus", "read", "--direct", "--address", tc.address,
				"--transport", tc.transport, "--unit", unit, "--start", "40002", "--count", "2", "--table", "input", "--json")
			if code != 0 {
				t.Fatalf("read --json: exit %d, stderr %s", code, errOut)
			}
			var rd struct {
				Unit      int
				Table     string
				Registers []struct {
					Address int
					Value   int
					Hex     string
				}
			}
			if err := json.Unmarshal([]byte(out), &rd); err != nil {
				t.Fatalf("read --json: %v\n%s", err, out)
			}
			if rd.Unit != tc.unit || rd.Table != "input" || len(rd.Registers) != 2 ||
				rd.Registers[0].Address != 40002 || rd.Registers[0].Value != 1 || rd.Registers[1].Hex != "0x0042" {
				t.Errorf("read --json: %+v", rd)
			}

			out, errOut, code = hearthCLI(t, nil, "modbus", "scan", "--direct", "--address", tc.address,
				"--transport", tc.transport, "--units", itoa(tc.unit-1)+"-"+itoa(tc.unit+1), "--timeout", "200ms", "--json")
			if code != 0 {
				t.Fatalf("scan: exit %d, stderr %s", code, errOut)
			}
			var sc struct {
				Units []struct {
					Unit     int
					SunSpec  bool
					Base     int
					Models   []struct{ ID int }
					Identity struct{ Serial string }
				}
			}
			if err := json.Unmarshal([]byte(out), &sc); err != nil {
				t.Fatalf("scan --json: %v\n%s", err, out)
			}
			if len(sc.Units) != 1 {
				t.Fatalf("scan found %d units, want 1:\n%s", len(sc.Units), out)
			}
			u := sc.Units[0]
			var ids []int
			for _, m := range u.Models {
				ids = append(ids, m.ID)
			}
			if u.Unit != tc.unit || !u.SunSpec || u.Base != 40000 || !slices.Equal(ids, []int{1, 103, 124, 802}) || u.Identity.Serial != tc.serial {
				t.Errorf("scan: got %+v, want unit %d speaking SunSpec at 40000 with models 1,103,124,802 and serial %s", u, tc.unit, tc.serial)
			}

			out, _, code = hearthCLI(t, nil, "modbus", "scan", "--direct", "--address", tc.address,
				"--transport", tc.transport, "--units", unit, "--timeout", "500ms")
			if code != 0 || !regexp.MustCompile(`(?m)^`+unit+`\s+yes\s+40000\s+1,103,124,802\s+hearth hearthsim `+tc.serial).MatchString(out) {
				t.Errorf("scan table: exit %d\n%s", code, out)
			}
		})
	}
}

// TestModbusCLIErrors checks what the CLI says when it cannot do the job.
func TestModbusCLIErrors(t *testing.T) {
	t.Parallel()
	_, addr := startSim(t, sim.Config{UnitID: 1})
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"read", "--socket", "/nonexistent/hearth.sock", "--address", addr, "--start", "40000"}, 4, "use `hearth modbus … --direct`"},
		{[]string{"read", "--direct", "--start", "40000"}, 2, "--address is required"},
		{[]string{"read", "--direct", "--address", addr, "--count", "126"}, 2, "--count must be 1..125"},
		{[]string{"read", "--direct", "--address", addr, "--start", "1", "--count", "2"}, 1, "exception 2 (illegal data address)"},
		{[]string{"read", "--direct", "--address", addr, "--unit", "9", "--start", "40000", "--timeout", "200ms"}, 1, "timeout"},
		{[]string{"scan", "--direct", "--address", addr, "--units", "5-2"}, 2, "ascending"},
		{[]string{"frob"}, 2, "unknown subcommand"},
	} {
		_, errOut, code := hearthCLI(t, nil, append([]string{"modbus"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("hearth modbus %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
