package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/drivers/sim/ptypair"
)

// startRTULine serves sims (each its own unit) on one end of a pty pair
// and returns the other end: one RS-485 line with several devices on it.
func startRTULine(t *testing.T, sims ...*sim.Simulator) string {
	t.Helper()
	client, device := ptypair.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.ServeRTUDevice(ctx, device, 9600, sims...) }()
	t.Cleanup(func() { cancel(); <-done })
	return client
}

// startRTUOverTCP serves sims as a serial gateway in transparent mode does.
func startRTUOverTCP(t *testing.T, sims ...*sim.Simulator) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.ServeRTUOverTCP(ctx, ln, sims...) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// linkDev is one device of a multi-link agent config.
type linkDev struct {
	Name, Transport, Address string
	Unit                     int
	Profile                  string // empty: sunspec
}

// writeLinkConfig writes an agent config with devices on any transport;
// no broker listens on the uplink address, so the agent runs offline.
func writeLinkConfig(t *testing.T, dir string, poll string, devs []linkDev) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "gateway_id: gw-links\ndata_dir: %s\ndiag_socket: %s/hearth.sock\ndevices:\n", dir, dir)
	for _, d := range devs {
		fmt.Fprintf(&b, "  - name: %s\n    transport: %s\n    address: %s\n    unit_id: %d\n    poll_interval: %s\n    timeout: 300ms\n    retries: 1\n    max_backoff: 2s\n",
			d.Name, d.Transport, d.Address, d.Unit, poll)
		if d.Profile != "" {
			fmt.Fprintf(&b, "    profile: %s\n", d.Profile)
		}
	}
	b.WriteString("uplink:\n  broker: tcp://127.0.0.1:1\n  boot_delay: 0s\n")
	path := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentStatus runs `hearth status --json` (exit 6, degraded, is expected:
// there is no broker).
func agentStatus(t *testing.T, sock string) diag.StatusReport {
	t.Helper()
	st, code, errOut := tryStatus(t, sock)
	if code != 0 && code != 6 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	return st
}

// tryStatus is agentStatus for an agent that may not be listening yet.
func tryStatus(t *testing.T, sock string) (diag.StatusReport, int, string) {
	t.Helper()
	out, errOut, code := hearthCLI(t, nil, "status", "--json", "--socket", sock)
	var st diag.StatusReport
	if code != 0 && code != 6 {
		return st, code, errOut
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st, code, errOut
}

func deviceReport(st diag.StatusReport, name string) diag.DeviceReport {
	for _, d := range st.Devices {
		if d.Name == name {
			return d
		}
	}
	return diag.DeviceReport{}
}

// waitPolled waits until every device has been read successfully n times
// without a failure.
func waitPolled(t *testing.T, sock string, n uint64, names ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, code, errOut := tryStatus(t, sock)
		if code == 4 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond) // not listening yet
			continue
		}
		if code != 0 && code != 6 {
			t.Fatalf("status: exit %d: %s", code, errOut)
		}
		ok := true
		for _, name := range names {
			d := deviceReport(st, name)
			ok = ok && d.Polls >= n && d.Failures == 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("devices %v not all polled %d times without failure: %+v", names, n, st.Devices)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// simRegisters reads registers straight from a simulator, without any
// transport: what a Modbus read must return.
func simRegisters(t *testing.T, s *sim.Simulator, unit uint8, start, count uint16) []uint16 {
	t.Helper()
	pdu := []byte{0x03, byte(start >> 8), byte(start), byte(count >> 8), byte(count)}
	resp, ok := s.Handle(unit, pdu)
	if !ok || len(resp) != 2+2*int(count) || resp[0] != 0x03 {
		t.Fatalf("simulator read %d+%d: % x", start, count, resp)
	}
	regs := make([]uint16, count)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(resp[2+2*i:])
	}
	return regs
}

type cliRead struct {
	Unit      int
	Registers []struct {
		Address int
		Value   uint16
	}
	Link *diag.LinkReport
}

func readViaAgent(t *testing.T, args ...string) cliRead {
	t.Helper()
	out, errOut, code := hearthCLI(t, nil, append([]string{"modbus", "read", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("modbus read %v: exit %d: %s", args, code, errOut)
	}
	var r cliRead
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("modbus read --json: %v\n%s", err, out)
	}
	if r.Link == nil {
		t.Fatalf("modbus read through the agent reports no link:\n%s", out)
	}
	return r
}

// TestModbusThroughAgent reads and scans through a running agent: the
// registers are the simulator's, and the agent's bus owner is the one that
// asked (its counters for a unit no device polls move by exactly the
// requests made), so the port is never opened a second time.
func TestModbusThroughAgent(t *testing.T) {
	t.Parallel()
	polled := sim.New(sim.Config{UnitID: 7, Serial: "RTU-7"})
	spare := sim.New(sim.Config{UnitID: 8, Serial: "RTU-8"})
	line := startRTULine(t, polled, spare)
	tcpSim, tcpAddr := startSim(t, sim.Config{UnitID: 1, Serial: "TCP-1"})

	dir := t.TempDir()
	cfg := writeLinkConfig(t, dir, "500ms", []linkDev{
		{"battery", "rtu", line, 7, ""},
		{"inverter", "tcp", tcpAddr, 1, ""},
	})
	startAgent(t, cfg)
	sock := filepath.Join(dir, "hearth.sock")
	waitPolled(t, sock, 2, "battery", "inverter")

	// Model 1 of unit 8 (static: marker, identity strings), which no device
	// polls: only these reads can reach it.
	want := simRegisters(t, spare, 8, 40000, 70)
	r1 := readViaAgent(t, "--socket", sock, "--device", "battery", "--unit", "8", "--start", "40000", "--count", "70")
	got := make([]uint16, len(r1.Registers))
	for i, r := range r1.Registers {
		got[i] = r.Value
		if r.Address != 40000+i {
			t.Errorf("register %d has address %d", i, r.Address)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("read through the agent:\n got %v\nwant %v", got, want)
	}
	if u := r1.Link.Units[8]; u.OK != 1 || r1.Link.Address != line || !slices.Equal(r1.Link.Devices, []string{"battery"}) {
		t.Errorf("after one read of unit 8 the link reports %+v, want unit 8 ok=1 on %s with device battery", r1.Link, line)
	}

	// By address: the same link, the same owner.
	r2 := readViaAgent(t, "--socket", sock, "--address", line, "--unit", "8", "--start", "40002", "--count", "2")
	if r2.Link.Units[8].OK != 2 || r2.Link.Stats.Requests <= r1.Link.Stats.Requests {
		t.Errorf("second read: unit 8 ok=%d (want 2), link requests %d then %d (want growth)",
			r2.Link.Units[8].OK, r1.Link.Stats.Requests, r2.Link.Stats.Requests)
	}
	if len(r2.Registers) != 2 || r2.Registers[0].Value != 1 || r2.Registers[1].Value != 66 {
		t.Errorf("model 1 header through the agent: %+v", r2.Registers)
	}

	// The device's own unit by default.
	r3 := readViaAgent(t, "--socket", sock, "--device", "inverter", "--start", "40000", "--count", "4")
	if want := simRegisters(t, tcpSim, 1, 40000, 4); r3.Unit != 1 || len(r3.Registers) != 4 ||
		r3.Registers[0].Value != want[0] || r3.Registers[3].Value != want[3] {
		t.Errorf("inverter read: %+v, want unit 1 and %v", r3, want)
	}

	out, errOut, code := hearthCLI(t, nil, "modbus", "scan", "--socket", sock, "--device", "battery", "--units", "6-9", "--timeout", "200ms", "--json")
	if code != 0 {
		t.Fatalf("scan through the agent: exit %d: %s", code, errOut)
	}
	var sc struct {
		Units []struct {
			Unit     int
			SunSpec  bool
			Identity struct{ Serial string }
		}
	}
	if err := json.Unmarshal([]byte(out), &sc); err != nil {
		t.Fatalf("scan --json: %v\n%s", err, out)
	}
	var found []string
	for _, u := range sc.Units {
		if u.SunSpec {
			found = append(found, fmt.Sprintf("%d:%s", u.Unit, u.Identity.Serial))
		}
	}
	if !slices.Equal(found, []string{"7:RTU-7", "8:RTU-8"}) {
		t.Errorf("scan through the agent found %v, want [7:RTU-7 8:RTU-8]\n%s", found, out)
	}
	// Absent units cost the link a timeout each, but the polled device
	// only waits: it never fails for it.
	if d := deviceReport(agentStatus(t, sock), "battery"); d.Failures != 0 || !d.Up {
		t.Errorf("battery after the scan: %d failures, up %t; want 0 and up", d.Failures, d.Up)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"read", "--socket", sock, "--address", "/dev/ttyNOPE", "--start", "0"}, 1, "no device on"},
		{[]string{"read", "--socket", sock, "--device", "nope", "--start", "0"}, 1, `no device named "nope"`},
		{[]string{"read", "--socket", sock, "--device", "battery", "--start", "1", "--count", "2"}, 1, "exception 2"},
		{[]string{"scan", "--socket", sock, "--device", "battery", "--units", "7", "--timeout", "9s"}, 2, "at most 5s"},
		{[]string{"read", "--direct", "--device", "battery", "--start", "0"}, 2, "does not go with --direct"},
	} {
		_, errOut, code := hearthCLI(t, nil, append([]string{"modbus"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("hearth modbus %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
}

// TestAgentPollsEveryLinkWithOneUnitSilent runs one agent on a Modbus TCP
// device, two RTU units on one pty line and an RTU-over-TCP unit. When one
// RTU unit stops answering, it is reported down and the others, its
// neighbour on the same line included, keep their poll rate and never fail.
func TestAgentPollsEveryLinkWithOneUnitSilent(t *testing.T) {
	t.Parallel()
	rtuA := sim.New(sim.Config{UnitID: 7, Serial: "RTU-7"})
	rtuB := sim.New(sim.Config{UnitID: 8, Serial: "RTU-8"})
	line := startRTULine(t, rtuA, rtuB)
	gwSim := sim.New(sim.Config{UnitID: 3, Serial: "GW-3", InitialSoC: 42})
	gw := startRTUOverTCP(t, gwSim)
	_, tcpAddr := startSim(t, sim.Config{UnitID: 1, Serial: "TCP-1"})

	const poll = 500 * time.Millisecond
	dir := t.TempDir()
	cfg := writeLinkConfig(t, dir, poll.String(), []linkDev{
		{"tcp_dev", "tcp", tcpAddr, 1, ""},
		{"rtu_a", "rtu", line, 7, ""},
		{"rtu_b", "rtu", line, 8, ""},
		{"gw_dev", "rtu-over-tcp", gw, 3, "hearthsim"}, // a fixed map, read through the planner
	})
	startAgent(t, cfg)
	sock := filepath.Join(dir, "hearth.sock")
	others := []string{"tcp_dev", "rtu_a", "gw_dev"}
	waitPolled(t, sock, 3, append(others, "rtu_b")...)
	for _, name := range []string{"tcp_dev", "rtu_a", "rtu_b"} {
		if d := deviceReport(agentStatus(t, sock), name); d.Identity == nil || d.Identity.Serial == "" {
			t.Errorf("%s: no identity read: %+v", name, d)
		}
	}
	// The profile device reports the simulator's values under the
	// profile's point names.
	out, errOut, code := hearthCLI(t, nil, "points", "gw_dev", "--json", "--socket", sock)
	if code != 0 {
		t.Fatalf("points gw_dev: exit %d: %s", code, errOut)
	}
	var pts []diag.PointReport
	if err := json.Unmarshal([]byte(out), &pts); err != nil {
		t.Fatalf("points --json: %v\n%s", err, out)
	}
	vals := map[string]float64{}
	for _, p := range pts {
		if p.Value != nil {
			vals[p.Name] = *p.Value
		}
	}
	if soc, ok := vals["soc_pct"]; !ok || soc < 41 || soc > 43 || vals["ac_hz"] < 45 || vals["ac_hz"] > 65 {
		t.Errorf("gw_dev (hearthsim profile) points: soc_pct %v (want about 42), ac_hz %v; all: %v", vals["soc_pct"], vals["ac_hz"], vals)
	}
	if _, ok := vals["m802_SoC_SF"]; ok {
		t.Error("a scale-factor point is reported as a value")
	}

	rtuB.SetFault(sim.Fault{NoResponse: true})
	deadline := time.Now().Add(20 * time.Second)
	for deviceReport(agentStatus(t, sock), "rtu_b").Failures == 0 {
		if time.Now().After(deadline) {
			t.Fatal("rtu_b never failed after it went silent")
		}
		time.Sleep(100 * time.Millisecond)
	}

	before := agentStatus(t, sock)
	const window = 8 * time.Second
	time.Sleep(window)
	after := agentStatus(t, sock)

	expect := uint64(window / poll) // 16
	for _, name := range others {
		b, a := deviceReport(before, name), deviceReport(after, name)
		polls, fails := a.Polls-b.Polls, a.Failures-b.Failures
		t.Logf("%s: %d polls in the window (interval says %d), %d failures", name, polls, expect, fails)
		// Generous: a loaded test machine may stretch polls, but a device
		// stalled behind its silent neighbour's timeouts would fall far
		// below half its rate or fail.
		if polls < expect/2 || polls > expect+3 || fails != 0 || !a.Up {
			t.Errorf("%s: %d polls and %d failures in a window of %d intervals, up %t; want about %d polls, none failed",
				name, polls, fails, expect, a.Up, expect)
		}
	}
	b := deviceReport(after, "rtu_b")
	if b.Up || b.Failures <= deviceReport(before, "rtu_b").Failures || b.LastError == "" {
		t.Errorf("silent rtu_b: up %t, failures %d (before %d), last error %q; want it down with more failures",
			b.Up, b.Failures, deviceReport(before, "rtu_b").Failures, b.LastError)
	}

	// It answers again: it comes back without a restart.
	rtuB.SetFault(sim.Fault{})
	deadline = time.Now().Add(20 * time.Second)
	for !deviceReport(agentStatus(t, sock), "rtu_b").Up {
		if time.Now().After(deadline) {
			t.Fatal("rtu_b did not come back after its fault cleared")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
