package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/drivers/sim/ptypair"
)

// TestHelpExitsZero: --help on every command prints its help on stdout
// and exits 0, for hearth and hearthsim alike; hearthsim's lists all its
// subcommands.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--help"}, {"run", "--help"}, {"status", "--help"}, {"points", "--help"}, {"events", "-h"},
		{"buffer", "--help"}, {"lease", "--help"}, {"mode", "--help"}, {"log-level", "--help"},
		{"modbus", "--help"}, {"modbus", "read", "--help"}, {"modbus", "scan", "--help"},
		{"config", "--help"}, {"config", "check", "--help"}, {"config", "init", "--help"},
		{"cert", "--help"}, {"cert", "request", "--help"}, {"version", "--help"},
	} {
		out, errOut, code := hearthCLI(t, nil, args...)
		if code != 0 || strings.TrimSpace(out) == "" {
			t.Errorf("hearth %v: exit %d, stdout %q, stderr %q; want exit 0 and the help on stdout", args, code, out, errOut)
		}
	}
	sim := hearthsimBin(t)
	out, _, code := runBinary(t, nil, sim, "--help")
	if code != 0 {
		t.Errorf("hearthsim --help: exit %d", code)
	}
	for _, want := range []string{"hearthsim demo", "hearthsim cloud keygen|send|watch", "hearthsim watch", "hearthsim fleet", "-modbus"} {
		if !strings.Contains(out, want) {
			t.Errorf("hearthsim --help lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{"demo", "--help"}, {"watch", "--help"}, {"cloud", "--help"}, {"cloud", "send", "--help"}, {"cloud", "keygen", "--help"}, {"fleet", "--help"}} {
		if out, errOut, code := runBinary(t, nil, sim, args...); code != 0 || out == "" {
			t.Errorf("hearthsim %v: exit %d, stdout %q, stderr %q; want exit 0 and the help on stdout", args, code, out, errOut)
		}
	}
	// A usage error is still one, on stderr.
	if _, errOut, code := hearthCLI(t, nil, "status", "--frob"); code != 2 || !strings.Contains(errOut, "frob") {
		t.Errorf("status --frob: exit %d, stderr %q; want exit 2 naming the flag", code, errOut)
	}
	if _, errOut, code := hearthCLI(t, nil, "status", "extra"); code != 2 || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("status extra: exit %d, stderr %q; want exit 2 naming the argument", code, errOut)
	}
}

// TestModbusScanDirectNamesTheCause: a scan that cannot open its port or
// reach its device fails with the cause and the next step, instead of
// reporting that no unit answered; a scan where nothing answers fails too.
func TestModbusScanDirectNamesTheCause(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1})
	_, pty := ptypair.Start(t) // a serial line with nothing on it, root's, mode 0600
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	missing := filepath.Join(t.TempDir(), "ttyUSB9")
	for _, tc := range []struct {
		name string
		cred *syscall.Credential
		args []string
		want []string
	}{
		{"missing serial port", nil, []string{"scan", "--direct", "--address", missing, "--units", "1-3"},
			[]string{"no such file or directory", "does not exist", "adapter plugged in"}},
		{"serial port not permitted", nobody, []string{"scan", "--direct", "--address", pty, "--units", "1-3"},
			[]string{"permission denied", "dialout"}},
		{"closed tcp port", nil, []string{"scan", "--direct", "--address", deadAddr(t), "--units", "1-3"},
			[]string{"connection refused", "wrong port?"}},
		{"nothing answers", nil, []string{"scan", "--direct", "--address", simAddr, "--units", "5-6", "--timeout", "100ms"},
			[]string{"no unit answered on " + simAddr + " (units 5-6, 100ms each)", "wrong unit ids"}},
		{"silent serial line", nil, []string{"scan", "--direct", "--address", pty, "--units", "1", "--timeout", "100ms"},
			[]string{"no unit answered", "A/B wiring, baud rate, parity"}},
		{"read of a wrong unit", nil, []string{"read", "--direct", "--address", simAddr, "--unit", "7", "--start", "40000", "--timeout", "200ms"},
			[]string{"timeout", "no reply from unit 7: wrong unit id?"}},
		{"read of a closed port", nil, []string{"read", "--direct", "--address", deadAddr(t), "--start", "40000"},
			[]string{"connection refused", "wrong port?"}},
	} {
		out, errOut, code := hearthCLI(t, tc.cred, append([]string{"modbus"}, tc.args...)...)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1 (failed); stdout %q stderr %q", tc.name, code, out, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, errOut)
			}
		}
	}
	// A unit that answers is found, and the scan succeeds.
	if out, errOut, code := hearthCLI(t, nil, "modbus", "scan", "--direct", "--address", simAddr, "--units", "1-2", "--timeout", "200ms"); code != 0 || !strings.Contains(out, "yes") {
		t.Errorf("scan of the simulator: exit %d\n%s\n%s", code, out, errOut)
	}
}
