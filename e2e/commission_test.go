package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// commissionReport is the JSON report of `hearth commission`.
type commissionReport struct {
	Gateway string `json:"gateway_id"`
	Devices []struct {
		Name, Serial, Firmware, Manufacturer string
		Models                               []int
	}
	Limits map[string]any
	Checks []struct {
		Name, Verdict, Detail, Hint string
	}
	Verdict string
}

func (r commissionReport) check(prefix string) (verdict, detail string) {
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c.Verdict, c.Detail
		}
	}
	return "", ""
}

// commissionTo runs `hearth commission --out report` with args and returns
// the report it kept, what it printed and its exit code; a report that was
// not kept or does not decode fails the test.
func commissionTo(t *testing.T, report string, args ...string) (commissionReport, string, int) {
	t.Helper()
	out, errOut, code := hearthCLI(t, nil, append([]string{"commission", "--out", report}, args...)...)
	t.Logf("hearth commission (exit %d):\n%s%s", code, out, errOut)
	var r commissionReport
	data, err := os.ReadFile(report)
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	if err != nil {
		t.Fatalf("the report was not kept (exit %d): %v\n%s%s", code, err, out, errOut)
	}
	return r, out, code
}

// TestCommissionAgainstSimulator runs `hearth commission` as an installer
// would, against the simulator, a production-like broker (TLS, client
// certificates, the documented ACL) and the real agent, and reads the
// report it keeps. A second installation with a wrong unit id fails, and
// says why.
func TestCommissionAgainstSimulator(t *testing.T) {
	t.Parallel()
	s, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "COMM-0001", InitialSoC: 60, PVPeakW: 1})
	s.SetPV(0)
	certs := harness.GenerateCerts(t)
	m := harness.StartMosquitto(t, harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, true), harness.WithACL(harness.GatewayACL))
	gwCert, gwKey := certs.Client(t, "gw-comm")
	cloudCert, cloudKey := certs.Client(t, "cloud")
	contract.Watch(t, harness.SubscribeTLS(t, m.URL(), "hearth/v1/#", certs.TLSConfig(t, cloudCert, cloudKey)))
	dir, sock, cfg := newAgentConfig(t, "gw-comm", `devices:
  - {name: battery, address: "`+simAddr+`", poll_interval: 250ms, timeout: 500ms}
uplink:
  broker: `+m.URL()+`
  ca_file: `+certs.CAFile+`
  cert_file: `+gwCert+`
  key_file: `+gwKey+`
  boot_delay: 0s
`)
	startAgent(t, cfg)
	st := waitStatus(t, sock, func(st diag.StatusReport) bool {
		return len(st.Devices) == 1 && st.Devices[0].Up && st.Devices[0].Identity != nil && st.Uplink.Connected && st.Uplink.Published > 0
	})
	if !slices.Contains(st.Agent.LocalModes, "power") {
		t.Fatalf("the agent's local modes %v lack power: the sign check cannot run", st.Agent.LocalModes)
	}

	r, out, code := commissionTo(t, filepath.Join(dir, "commissioning.json"), "--socket", sock, "--config", cfg, "--for", "1m")
	if r.Gateway != "gw-comm" || len(r.Devices) != 1 || r.Devices[0].Serial != "COMM-0001" || r.Devices[0].Firmware == "" ||
		!slices.Equal(r.Devices[0].Models, []int{1, 103, 124, 802}) || r.Limits["max_charge_w"] != 2500.0 || r.Limits["soc_min_pct"] != 10.0 {
		t.Errorf("report identifies %+v with limits %v; want the simulator's serial, firmware, models and the default limits", r.Devices, r.Limits)
	}
	for _, want := range []struct{ check, verdict, detail string }{
		{"battery answers", "pass", "serial COMM-0001"},
		{"battery readings plausible", "pass", "soc_pct 60"},
		{"uplink (the agent's session)", "pass", "messages acknowledged"},
		{"broker probe", "pass", "tls ok, connect ok, subscribe ok, publish ok"},
	} {
		if v, d := r.check(want.check); v != want.verdict || !strings.Contains(d, want.detail) {
			t.Errorf("check %q: %s %q; want %s with %q", want.check, v, d, want.verdict, want.detail)
		}
	}
	// The battery charges at the test power, with the right sign.
	if v, d := r.check("sign"); v != "pass" || !strings.Contains(d, "power_w -500 W") || r.Verdict != "PASS" || code != 0 {
		t.Errorf("sign check %s %q, verdict %s, exit %d; want pass, charging at the test power, PASS, 0", v, d, r.Verdict, code)
	}
	for _, want := range []string{"hearth commissioning report", "gateway gw-comm", "COMM-0001", "limits  SoC 10–95 %, charge ≤ 2500 W", "PASS    battery answers", "VERDICT: "} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q", want)
		}
	}
	// Commissioning leaves no local mode behind.
	if st := waitStatus(t, sock, func(diag.StatusReport) bool { return true }); st.Lease != nil {
		t.Errorf("a lease is left after commissioning: %+v", st.Lease)
	}

	// A second gateway whose device is configured with a wrong unit id.
	_, sock2, cfg2 := newAgentConfig(t, "gw-comm2", `devices:
  - {name: battery, address: "`+simAddr+`", unit_id: 7, poll_interval: 250ms, timeout: 300ms}
uplink: {broker: "tcp://`+deadAddr(t)+`", boot_delay: 0s}
`)
	startAgent(t, cfg2)
	waitStatus(t, sock2, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Failures > 0 })
	out, _, code = hearthCLI(t, nil, "commission", "--json", "--socket", sock2, "--config", cfg2, "--skip-sign")
	r = commissionReport{}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("commission --json: %v\n%s", err, out)
	}
	v, d := r.check("battery answers")
	if code != 1 || r.Verdict != "FAIL" || v != "fail" || !strings.Contains(d, "timeout") {
		t.Errorf("commission of a wrong unit id: exit %d, verdict %s, battery %s %q; want 1, FAIL, fail", code, r.Verdict, v, d)
	}
	if v, _ := r.check("uplink"); v != "fail" {
		t.Errorf("uplink check %s without a broker, want fail", v)
	}
	if v, _ := r.check("sign"); v != "skipped" {
		t.Errorf("sign check %s with --skip-sign, want skipped", v)
	}
}

// TestModeSetPower: `hearth mode set power -500W --for 2m` holds a small
// local test power through safety where the control loop can, and is
// refused with the reason where it cannot; bad powers and durations are
// usage errors.
func TestModeSetPower(t *testing.T) {
	t.Parallel()
	s, simAddr := startSim(t, sim.Config{UnitID: 1, InitialSoC: 60, PVPeakW: 1})
	s.SetPV(0)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hearth.sock")
	cfg := writeConfig(t, dir, "gw-power", "tcp://"+deadAddr(t), "250ms", []devSpec{{"battery", simAddr}})
	agent := startAgent(t, cfg)
	st := waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"mode", "set", "power", "--for", "2m"}, 2, "give the power"},
		{[]string{"mode", "set", "power", "fast", "--for", "2m"}, 2, `power "fast"`},
		{[]string{"mode", "set", "power", "-500W"}, 2, "--for is required"},
		{[]string{"mode", "set", "power", "-500W", "--for", "1h"}, 1, "at most 15m0s for mode power"},
	} {
		_, errOut, code := hearthCLI(t, nil, append(tc.args, "--socket", sock)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("hearth %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	if !slices.Contains(st.Agent.LocalModes, "power") {
		t.Fatalf("local modes %v lack power", st.Agent.LocalModes)
	}
	if _, errOut, code := hearthCLI(t, nil, "mode", "set", "power", "1500W", "--for", "2m", "--socket", sock); code == 0 {
		t.Errorf("a local test power of 1500 W was taken (stderr %q); want at most ±1000 W", errOut)
	}
	out, errOut, code := hearthCLI(t, nil, "mode", "set", "power", "-500W", "--for", "2m", "--socket", sock)
	if code != 0 || !strings.Contains(out, "mode power -500 W (charging) for 2m") {
		t.Fatalf("mode set power: exit %d\n%s%s", code, out, errOut)
	}
	waitStatus(t, sock, func(st diag.StatusReport) bool {
		return st.Lease != nil && st.Lease.Source == "local" && st.Safety.Mode == "power"
	})
	if out, _, code := hearthCLI(t, nil, "mode", "get", "--socket", sock); code != 0 || !strings.Contains(out, "mode power, commanding -500 W") || !strings.Contains(out, "local lease") {
		t.Errorf("mode get while a local test power holds: exit %d: %q", code, out)
	}
	// The log says the power, not where it is kept.
	if log := agent.Log(); !strings.Contains(log, "power_w=-500") || strings.Contains(log, "power_w=0x") {
		t.Errorf("the agent's log of the local mode does not give the power:\n%s", log)
	}
	if _, _, code := hearthCLI(t, nil, "mode", "clear", "--socket", sock); code != 0 {
		t.Errorf("mode clear: exit %d", code)
	}
}

// TestCommissionFindsAnInvertedSign: a device that reports charging as
// positive power (a register map with the wrong sign: W and A both
// inverted, no charge status to contradict them) fails the sign check,
// which says so, instead of passing on a reading taken before the device
// held the test power.
func TestCommissionFindsAnInvertedSign(t *testing.T) {
	t.Parallel()
	s, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "COMM-INV", InitialSoC: 60, PVPeakW: 1, InvertPowerSign: true})
	s.SetPV(0)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hearth.sock")
	cfg := writeConfig(t, dir, "gw-inv", "tcp://"+deadAddr(t), "250ms", []devSpec{{"battery", simAddr}})
	startAgent(t, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	out, errOut, code := hearthCLI(t, nil, "commission", "--json", "--socket", sock, "--config", cfg, "--for", "1m", "--no-broker-probe")
	var r commissionReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("commission --json: %v\n%s%s", err, out, errOut)
	}
	if v, d := r.check("sign"); v != "fail" || !strings.Contains(d, "+500") && !strings.Contains(d, "power_w 500") || code != 1 {
		t.Errorf("sign check of an inverted device: %s %q, exit %d; want fail naming the reported +500 W", v, d, code)
	}
	if !strings.Contains(out, "inverted") {
		t.Errorf("the report does not say the sign is inverted:\n%s", out)
	}
}

// TestCommissionWaitsForTheTestPower: a device already charging on its
// own (PV, under a local control it does not report) at 3 kW, whose power
// then does not follow the test power: the sign check must not pass on the charging it saw
// before the device held the test power.
func TestCommissionWaitsForTheTestPower(t *testing.T) {
	t.Parallel()
	s, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "COMM-OLD", InitialSoC: 60, PVPeakW: 1})
	s.SetPV(0)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hearth.sock")
	cfg := writeConfig(t, dir, "gw-old", "tcp://"+deadAddr(t), "250ms", []devSpec{{"battery", simAddr}})
	startAgent(t, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool { return len(st.Devices) == 1 && st.Devices[0].Up })
	// 3300 W of PV over a 300 W load, under local control: it charges the
	// 3 kW surplus, whatever it is told.
	s.SetLoad(300)
	s.SetPV(3300)
	s.SetLocalControl(true)
	// A battery that does not say so: LocRemCtl reads REMOTE, so the
	// agent writes it the test power, which it holds and does not run.
	if err := s.SetRaw(802, "LocRemCtl", 0); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := hearthCLI(t, nil, "commission", "--json", "--socket", sock, "--config", cfg, "--for", "15s", "--no-broker-probe")
	var r commissionReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("commission --json: %v\n%s%s", err, out, errOut)
	}
	if v, d := r.check("sign"); v != "fail" || !strings.Contains(d, "-3000") || code != 1 {
		t.Errorf("sign check of a device that does not follow: %s %q, exit %d; want fail, power_w staying at -3000 W", v, d, code)
	}
}

// TestCommissionTwoBatteries commissions a site with two batteries, one
// over Modbus TCP and one over RTU on a serial line (a pty): the test
// power is shared between them, and each battery's sign is judged on its
// own readings against the share it holds, with a row of its own. Then
// the TCP battery is switched to local control with 1.5 kW of PV surplus:
// it charges that surplus whatever it is told, and every register it
// reports says so (W, A, ChaSt, LocRemCtl); the agent writes it nothing,
// its row fails naming local control, while the RTU battery's still
// passes on the share it holds.
func TestCommissionTwoBatteries(t *testing.T) {
	t.Parallel()
	tcp, tcpAddr := startSim(t, sim.Config{UnitID: 1, Serial: "TWO-TCP-1", InitialSoC: 55, PVPeakW: 1})
	tcp.SetPV(0)
	tcp.SetLoad(300)
	rtuDev := startSimRTU(t, "--unit", "2", "--serial", "TWO-RTU-2", "--soc", "60")
	dir, sock, cfg := newAgentConfig(t, "gw-two", `devices:
  - {name: battery1, address: "`+tcpAddr+`", poll_interval: 250ms, timeout: 500ms}
  - {name: battery2, transport: rtu, address: `+rtuDev+`, unit_id: 2, poll_interval: 500ms, timeout: 1s}
uplink: {broker: "tcp://`+deadAddr(t)+`", boot_delay: 0s}
`)
	startAgent(t, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool {
		return len(st.Devices) == 2 && st.Devices[0].Up && st.Devices[1].Up && st.Devices[1].Identity != nil
	})
	run := 0
	commission := func() (commissionReport, string, int) {
		t.Helper()
		run++
		return commissionTo(t, filepath.Join(dir, fmt.Sprintf("commissioning-%d.json", run)), "--socket", sock, "--config", cfg, "--for", "15s", "--no-broker-probe")
	}
	row := func(r commissionReport, name string) (verdict, detail string) { return r.check("sign: " + name + " ") }

	r, out, code := commission()
	if len(r.Devices) != 2 || r.Devices[0].Serial != "TWO-TCP-1" || r.Devices[1].Serial != "TWO-RTU-2" {
		t.Errorf("report devices %+v, want both batteries with their serials", r.Devices)
	}
	for _, name := range []string{"battery1", "battery2"} {
		// -500 W shared by two: each holds -250 W.
		if v, d := row(r, name); v != "pass" || !strings.Contains(d, "commanded -250 W") {
			t.Errorf("sign row of %s: %s %q; want pass at its share, -250 W", name, v, d)
		}
		if v, _ := r.check(name + " answers"); v != "pass" {
			t.Errorf("%s answers: %s", name, v)
		}
	}
	if !strings.Contains(out, "PASS    sign: battery1 follows -250 W") || !strings.Contains(out, "PASS    sign: battery2 follows -250 W") {
		t.Errorf("text report lacks a sign row per battery:\n%s", out)
	}
	if v, _ := r.check("uplink"); v != "fail" || code != 1 {
		t.Errorf("uplink %s, exit %d: there is no broker, the report must fail on it alone", v, code)
	}
	for _, c := range r.Checks {
		if c.Verdict == "fail" && !strings.HasPrefix(c.Name, "uplink") {
			t.Errorf("check %q failed: %s", c.Name, c.Detail)
		}
	}

	// 1800 W of PV over a 300 W load, under local control: battery1
	// charges the 1.5 kW surplus on its own, whatever it is told.
	tcp.SetPV(1800)
	tcp.SetLocalControl(true)
	r, _, _ = commission()
	if st := tcp.State(); st.BatteryW != -1500 || !st.Local {
		t.Fatalf("battery1 ran %v W (local control %t) during the check; want the fixture's -1500 W under local control", st.BatteryW, st.Local)
	}
	// Its LocRemCtl says LOCAL: the agent writes it nothing, and its row
	// says what to set.
	i := slices.IndexFunc(r.Checks, func(c struct{ Name, Verdict, Detail, Hint string }) bool { return c.Name == "sign: battery1" })
	if i < 0 || r.Checks[i].Verdict != "fail" || !strings.Contains(r.Checks[i].Detail, "never held its share") ||
		!strings.Contains(r.Checks[i].Hint, "under local control") || !strings.Contains(r.Checks[i].Hint, "set the battery's control mode to remote (SunSpec model 802 LocRemCtl)") {
		t.Errorf("sign checks %+v; want battery1's failed, never held, its hint naming local control and the setting", r.Checks)
	}
	if v, d := row(r, "battery2"); v != "pass" || !strings.Contains(d, "commanded -250 W") {
		t.Errorf("sign row of battery2 beside a battery1 that does not follow: %s %q; want pass at its share, -250 W, on its own readings", v, d)
	}
}
