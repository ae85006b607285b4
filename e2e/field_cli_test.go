package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/drivers/sim/ptypair"
	"github.com/hearth-energy/hearth/internal/harness"
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
		{"uplink", "--help"}, {"uplink", "reconnect", "--help"}, {"commission", "--help"}, {"dump", "--help"},
		{"keys", "--help"}, {"keys", "reload", "--help"}, {"lease", "reset-version", "--help"},
		{"device", "--help"}, {"device", "probe", "--help"}, {"config", "hash-password", "--help"},
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

// waitStatus polls `hearth status --json` until cond holds, and returns
// that report; the test fails after 30 s with the last one.
func waitStatus(t *testing.T, sock string, cond func(diag.StatusReport) bool) diag.StatusReport {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st diag.StatusReport
	var out string
	for {
		out, _, _ = hearthCLI(t, nil, "status", "--json", "--socket", sock)
		st = diag.StatusReport{}
		if json.Unmarshal([]byte(out), &st) == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never met the condition; last:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStatusNamesTheDeviceCause: a device at a closed port and one with a
// wrong unit id are told apart in status, with the next step, and still
// after the link has marked them down and only probes them; --wide shows
// the whole error.
func TestStatusNamesTheDeviceCause(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1})
	_, sock, cfg := newAgentConfig(t, "gw-cause", `devices:
  - {name: battery, address: "`+simAddr+`", poll_interval: 250ms, timeout: 300ms}
  - {name: wrongport, address: "`+deadAddr(t)+`", poll_interval: 250ms, timeout: 300ms}
  - {name: wrongunit, address: "`+simAddr+`", unit_id: 7, poll_interval: 250ms, timeout: 300ms}
uplink: {broker: "tcp://`+deadAddr(t)+`", boot_delay: 0s}
`)
	startAgent(t, cfg)
	// Many failed polls: the link has marked both down and refuses most
	// polls without asking, yet the cause stays.
	st := waitStatus(t, sock, func(st diag.StatusReport) bool {
		return len(st.Devices) == 3 && st.Devices[1].Failures >= 8 && st.Devices[2].Failures >= 8
	})
	for _, c := range []struct {
		dev         diag.DeviceReport
		cause, hint string
	}{
		{st.Devices[1], diag.CauseRefused, "wrong port?"},
		{st.Devices[2], diag.CauseNoReply, "no reply from unit 7: wrong unit id?"},
	} {
		if c.dev.Up || c.dev.Cause != c.cause || !strings.Contains(c.dev.Hint, c.hint) {
			t.Errorf("%s: up %t, cause %q, hint %q, last_error %q; want down, %q, a hint with %q",
				c.dev.Name, c.dev.Up, c.dev.Cause, c.dev.Hint, c.dev.LastError, c.cause, c.hint)
		}
	}
	for _, want := range []string{"wrongport for", "(connection refused)", "wrongunit for", "(no reply from unit 7)"} {
		if !strings.Contains(st.Verdict, want) {
			t.Errorf("verdict %q lacks %q", st.Verdict, want)
		}
	}
	human, _, code := hearthCLI(t, nil, "status", "--socket", sock)
	for _, want := range []string{"connection refused", "wrongport: connection refused by", "wrongunit: no reply from unit 7: wrong unit id?"} {
		if !strings.Contains(human, want) {
			t.Errorf("status (exit %d) lacks %q:\n%s", code, want, human)
		}
	}
	// A down device's error text moves between polls (the refusal, then
	// "next probe pending"): compare --wide with the error that stood
	// before and after it ran.
	lastErr := func() string {
		return waitStatus(t, sock, func(diag.StatusReport) bool { return true }).Devices[1].LastError
	}
	for try := 1; ; try++ {
		before := lastErr()
		wide, _, _ := hearthCLI(t, nil, "status", "--wide", "--socket", sock)
		if after := lastErr(); after != before && try < 10 {
			continue
		}
		if !strings.Contains(wide, before) || !strings.Contains(wide, "tcp "+simAddr) {
			t.Errorf("status --wide lacks the whole error %q or the link:\n%s", before, wide)
		}
		break
	}
	// An event type that does not exist is an error, naming those that do.
	_, errOut, code := hearthCLI(t, nil, "events", "--type", "nosuch", "--socket", sock)
	if code != 2 || !strings.Contains(errOut, `unknown event type "nosuch"`) || !strings.Contains(errOut, "device_down") {
		t.Errorf("events --type nosuch: exit %d, stderr %q; want exit 2 and the known types", code, errOut)
	}
	out, _, code := hearthCLI(t, nil, "events", "--type", "device_down", "--json", "--socket", sock)
	if code != 0 || !strings.Contains(out, "wrongunit") {
		t.Errorf("events --type device_down: exit %d\n%s", code, out)
	}
}

// TestBootDelayAndReconnect: while the agent waits out its boot delay,
// status says so, with the time of the first attempt, and is not degraded
// for it; `hearth uplink reconnect` connects at once.
func TestBootDelayAndReconnect(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1})
	m := startBroker(t)
	rec := subscribe(t, m.URL(), "hearth/v1/gw-boot/#")
	_, sock, cfg := newAgentConfig(t, "gw-boot", `devices:
  - {name: battery, address: "`+simAddr+`", poll_interval: 250ms, timeout: 300ms}
uplink: {broker: "`+m.URL()+`", boot_delay: 24h}
`)
	startAgent(t, cfg)
	st := waitStatus(t, sock, func(st diag.StatusReport) bool {
		return len(st.Devices) == 1 && st.Devices[0].Up && st.Uplink.BootDelayUntil != nil
	})
	if left := time.Until(*st.Uplink.BootDelayUntil); left < time.Minute || st.Uplink.Attempts != 0 || st.Uplink.Connected {
		t.Errorf("boot delay ends in %s after %d attempts (connected %t); want a long wait and no attempt yet", left, st.Uplink.Attempts, st.Uplink.Connected)
	}
	human, _, code := hearthCLI(t, nil, "status", "--socket", sock)
	if code != 0 || !strings.Contains(human, "boot delay: first attempt to "+m.URL()) || !strings.Contains(human, "hearth uplink reconnect") || !strings.Contains(human, "\nOK\n") {
		t.Errorf("status during the boot delay: exit %d (want 0, not degraded)\n%s", code, human)
	}
	out, errOut, code := hearthCLI(t, nil, "uplink", "reconnect", "--socket", sock)
	if code != 0 || !strings.Contains(out, "uplink connected to "+m.URL()) {
		t.Fatalf("uplink reconnect: exit %d\n%s%s", code, out, errOut)
	}
	rec.WaitFor(t, 10*time.Second, func(msgs []harness.Message) bool {
		return hasTopic(msgs, "hearth/v1/gw-boot/status", `"online"`)
	})
	st = waitStatus(t, sock, func(st diag.StatusReport) bool { return st.Uplink.Connected })
	if st.Uplink.BootDelayUntil != nil || st.Uplink.NextAttempt != nil || st.Verdict != "OK" {
		t.Errorf("connected: boot delay %v, next attempt %v, verdict %q", st.Uplink.BootDelayUntil, st.Uplink.NextAttempt, st.Verdict)
	}
	// The buffer's last seq is the last given to a reading, not the end
	// of the block reserved for them.
	msgs := rec.WaitFor(t, 20*time.Second, func(msgs []harness.Message) bool { return len(readings(t, msgs, "gw-boot")) >= 8 })
	before := maxSeq(seqSet(readings(t, msgs, "gw-boot")))
	out, _, _ = hearthCLI(t, nil, "buffer", "--json", "--socket", sock)
	var b diag.BufferReport
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("buffer --json: %v\n%s", err, out)
	}
	after := maxSeq(seqSet(readings(t, rec.Messages(), "gw-boot")))
	if b.LastSeq < before || b.LastSeq > after+8 || b.ReservedSeq != 1024 {
		t.Errorf("buffer: last_seq %d, reserved_seq %d; the cloud had seqs up to %d before and %d after; want last_seq among those and one block of 1024 reserved",
			b.LastSeq, b.ReservedSeq, before, after)
	}
	if human, _, _ := hearthCLI(t, nil, "buffer", "--socket", sock); !strings.Contains(human, "reserved          up to seq 1024") {
		t.Errorf("buffer does not say what is reserved:\n%s", human)
	}
	// Already connected: nothing to do, and it says so.
	if out, _, code := hearthCLI(t, nil, "uplink", "reconnect", "--socket", sock); code != 0 || !strings.Contains(out, "connected") {
		t.Errorf("uplink reconnect when connected: exit %d\n%s", code, out)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRunOnUnwritableDataDir: an agent that cannot write its data_dir
// stops at once and says why and what to do, rather than SQLite's "no
// such file or directory".
func TestRunOnUnwritableDataDir(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hearth-ro-") // reachable by nobody, unlike t.TempDir's parent
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data := filepath.Join(dir, "data") // root's, 0755: not the agent user's
	os.Mkdir(data, 0o755)
	conf := func(dataDir string) string {
		p := filepath.Join(dir, filepath.Base(dataDir)+".yaml")
		writeFile(t, p, "gateway_id: gw-ro\ndata_dir: "+dataDir+"\ndiag_socket: "+filepath.Join(dir, "hearth.sock")+
			"\ndevices:\n  - {name: battery, address: \""+deadAddr(t)+"\"}\nuplink: {broker: \"tcp://"+deadAddr(t)+"\"}\n")
		os.Chmod(p, 0o644)
		return p
	}
	_, errOut, code := runBinary(t, &syscall.Credential{Uid: 65534, Gid: 65534}, hearthBin, "run", "--config", conf(data))
	for _, want := range []string{"data_dir " + data + " is not writable by uid 65534", "permission denied", "chown"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("run as nobody on a root-owned data_dir: exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}
	if strings.Contains(errOut, "no such file or directory") {
		t.Errorf("the error still blames a missing file:\n%s", errOut)
	}

	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a read-only file system here (%v: %s); the permission case above ran", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", ro).Run() }) // before RemoveAll: cleanups run last first
	_, errOut, code = runBinary(t, nil, hearthBin, "run", "--config", conf(filepath.Join(ro, "hearth")))
	if code != 1 || !strings.Contains(errOut, "is on a read-only file system") || !strings.Contains(errOut, "remount it read-write") {
		t.Errorf("run on a read-only data_dir: exit %d, stderr:\n%s", code, errOut)
	}
}

// TestDemoPipedToHeadStopsItsAgent: `hearthsim demo | head -3` ends the
// demo when head goes away, and takes its agent with it.
func TestDemoPipedToHeadStopsItsAgent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", hearthsimBin(t)+" demo --agent "+hearthBin+" | head -3")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hearthsim demo | head -3: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`agent pid (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the demo did not say its agent's pid:\n%s", out)
	}
	pid, _ := strconv.Atoi(string(m[1]))
	deadline := time.Now().Add(15 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the demo's agent (pid %d) still runs 15 s after head exited", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestConfigCheckWarnsAndChecksFiles: config check reports certificate
// files that do not exist as errors on their lines, and risky settings as
// warnings on theirs (exit 0, or 3 with --strict).
func TestConfigCheckWarnsAndChecksFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "config-missing-certs.yaml")
	writeFile(t, missing, `gateway_id: gw-check
devices:
  - {name: battery, address: "192.0.2.10:502"}
uplink:
  broker: tls://mqtt.example.net:8883
  ca_file: `+dir+`/nope-ca.pem
  cert_file: `+dir+`/nope.crt
  key_file: `+dir+`/nope.key
`)
	out, _, code := hearthCLI(t, nil, "config", "check", missing)
	if code != 3 || !strings.Contains(out, missing+":6: uplink.ca_file") || !strings.Contains(out, missing+":7: uplink.cert_file") {
		t.Errorf("config check with missing certificates: exit %d, want 3 and both files on their lines:\n%s", code, out)
	}
	risky := filepath.Join(dir, "risky.yaml")
	writeFile(t, risky, `gateway_id: gw-check
devices:
  - {name: battery, address: "192.0.2.10:502"}
safety:
  max_discharge_w: 250000
uplink:
  broker: tcp://mqtt.example.net:1883
`)
	out, _, code = hearthCLI(t, nil, "config", "check", risky)
	for _, want := range []string{
		risky + ":5: warning: safety.max_discharge_w: 250000 W is far beyond a home battery",
		risky + ":6: warning: uplink: no setpoint_keys: unsigned setpoints are accepted",
		risky + ":7: warning: uplink.broker: plain tcp:// to mqtt.example.net:1883",
		risky + ": OK (3 warnings)",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("config check of a risky config: exit %d (want 0), output lacks %q:\n%s", code, want, out)
		}
	}
	if _, _, code := hearthCLI(t, nil, "config", "check", "--strict", risky); code != 3 {
		t.Errorf("config check --strict with warnings: exit %d, want 3", code)
	}
	out, _, _ = hearthCLI(t, nil, "config", "check", "--json", risky)
	var res struct {
		Valid    bool
		Warnings []struct {
			Line    int
			Message string
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Valid || len(res.Warnings) != 3 || res.Warnings[2].Line != 7 {
		t.Errorf("config check --json: %v %+v\n%s", err, res, out)
	}
}

// TestConfigCheckOnline: --online identifies each device and checks the
// broker (TLS, the gateway's certificate, its ACL) as the agent would use
// them, names what fails, and touches nothing else: no device write, no
// message but its own on …/check. With the agent running it asks the
// devices the agent owns through the agent, and the others directly.
func TestConfigCheckOnline(t *testing.T) {
	t.Parallel()
	s, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "ONLINE-1"})
	certs := harness.GenerateCerts(t)
	m := harness.StartMosquitto(t, harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, true), harness.WithACL(harness.GatewayACL))
	gwCert, gwKey := certs.Client(t, "gw-online")
	cloudCert, cloudKey := certs.Client(t, "cloud")
	rec := harness.SubscribeTLS(t, m.URL(), "hearth/v1/#", certs.TLSConfig(t, cloudCert, cloudKey))
	contract.Watch(t, rec)
	other := harness.GenerateCerts(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hearth.sock")
	conf := func(name, ca string, devices ...string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, `gateway_id: gw-online
data_dir: `+dir+`
diag_socket: `+sock+`
devices:
`+strings.Join(devices, "")+`uplink:
  broker: `+m.URL()+`
  ca_file: `+ca+`
  cert_file: `+gwCert+`
  key_file: `+gwKey+`
  boot_delay: 0s
`)
		return p
	}
	battery := `  - {name: battery, address: "` + simAddr + `", poll_interval: 250ms, timeout: 500ms}` + "\n"
	dead := `  - {name: meter, address: "` + deadAddr(t) + `", profile: sunspec}` + "\n"
	good := conf("good.yaml", certs.CAFile, battery)

	out, errOut, code := hearthCLI(t, nil, "config", "check", "--online", good)
	for _, want := range []string{
		"device battery (tcp " + simAddr + " unit 1, via direct): ok, SunSpec, models 1,103,124,802; hearth hearthsim, serial ONLINE-1",
		"broker tls: ok: TLS 1.3, broker certificate",
		"broker publish: ok: published on hearth/v1/gw-online/check and read it back",
		"online: 1 of 1 devices answered; broker ok",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("config check --online: exit %d, output lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
	var res struct {
		Online struct {
			OK      bool
			Devices []struct {
				Name     string
				OK       bool
				Identity struct{ Serial string }
			}
			Broker struct{ OK bool }
		}
	}
	out, _, code = hearthCLI(t, nil, "config", "check", "--online", "--json", good)
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || !res.Online.OK || res.Online.Devices[0].Identity.Serial != "ONLINE-1" {
		t.Errorf("config check --online --json: exit %d, %v, %+v\n%s", code, err, res, out)
	}

	bad := conf("bad.yaml", other.CAFile, battery, dead)
	out, _, code = hearthCLI(t, nil, "config", "check", "--online", bad)
	for _, want := range []string{
		"device meter (tcp ", "FAILED: ", "connection refused by", "wrong port?",
		"broker tls: FAILED: tls: failed to verify certificate", "not signed by " + other.CAFile,
		"online: 1 of 2 devices answered; broker FAILED",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("config check --online of a bad config: exit %d (want 1), output lacks %q:\n%s", code, want, out)
		}
	}

	// Until the agent ran, the checks wrote nothing to the device and
	// published only their probes, on …/check.
	if w := s.Writes(); len(w) != 0 {
		t.Errorf("the checks wrote to the device: %v", w)
	}
	before := rec.Messages()
	for _, msg := range before {
		if msg.Topic != "hearth/v1/gw-online/check" {
			t.Errorf("a check published on %s: %s", msg.Topic, msg.Payload)
		}
	}
	if len(before) != 2 {
		t.Errorf("%d probe messages, want 2 (the check with the wrong CA never connected)", len(before))
	}

	// With the agent running, devices are asked through it.
	startAgent(t, good)
	waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	out, _, code = hearthCLI(t, nil, "config", "check", "--online", good)
	if code != 0 || !strings.Contains(out, "via agent): ok, SunSpec") {
		t.Errorf("config check --online with the agent running: exit %d\n%s", code, out)
	}

	// A config being prepared while the agent runs the old one: the
	// device the agent does not own is asked directly, the one it owns
	// through the agent.
	_, sim2Addr := startSim(t, sim.Config{UnitID: 1, Serial: "ONLINE-2"})
	next := conf("next.yaml", certs.CAFile, battery,
		`  - {name: battery2, address: "`+sim2Addr+`", poll_interval: 250ms, timeout: 500ms}`+"\n")
	out, errOut, code = hearthCLI(t, nil, "config", "check", "--online", next)
	for _, want := range []string{
		"device battery (tcp " + simAddr + " unit 1, via agent): ok, SunSpec",
		"device battery2 (tcp " + sim2Addr + " unit 1, via direct): ok, SunSpec, models 1,103,124,802; hearth hearthsim, serial ONLINE-2",
		"online: 2 of 2 devices answered; broker ok",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("config check --online of a new config with the agent running: exit %d, output lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
}

// TestVersionJSON: `hearth version --json` says when the binary was built
// and how that is known, as a support request needs it.
func TestVersionJSON(t *testing.T) {
	t.Parallel()
	out, _, code := hearthCLI(t, nil, "version", "--json")
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
		t.Fatalf("version --json: exit %d, %v\n%s", code, err, out)
	}
	if _, err := time.Parse(time.RFC3339, v["build_date"]); err != nil || v["build_date_from"] == "" || v["version"] == "" {
		t.Errorf("version --json: %v; want version, an RFC 3339 build_date and where it came from", v)
	}
	if out, _, _ := hearthCLI(t, nil, "version"); !strings.Contains(out, "(built ") {
		t.Errorf("hearth version: %q; want the build date", out)
	}
}
