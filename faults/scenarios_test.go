package faults

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// waitReadings waits until the broker has seen at least n readings.
func waitReadings(t *testing.T, o *observer, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(o.ledger().readings) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d readings reached the broker within %s", n, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBrokerRestartUnderLoad kills Mosquitto (SIGKILL, no persistence)
// and restarts it, several times, while the agent polls two devices at
// 10 Hz and holds a discharge lease above its limit.
func TestBrokerRestartUnderLoad(t *testing.T) {
	t.Parallel()
	mq := harness.StartMosquitto(t)
	px := harness.StartProxy(t, mq.Addr())
	s, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTBRK"})
	g := newGateway(t, "gw-broker", gatewayOpts{Broker: px.URL(), Poll: "100ms",
		Devices: []device{{"battery", addr}, {"inverter", addr}}})
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 20, 20*time.Second)
	step(t, "publish a 3000 W discharge lease (limit 1500 W)")
	harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, "brk", 1, 3000, 10*time.Minute, nil), false)

	restarts := pick(3, 12)
	for i := range restarts {
		time.Sleep(pick(2*time.Second, 8*time.Second))
		// The proxy refuses first, so that nothing the broker acked is
		// still on its way to the observer when the broker dies.
		px.Refuse(true)
		px.Cut()
		time.Sleep(300 * time.Millisecond)
		down := pick(2*time.Second, 15*time.Second)
		step(t, "restart %d/%d: SIGKILL mosquitto, down for %s, start it again", i+1, restarts, down)
		mq.Stop()
		time.Sleep(down)
		mq.Start()
		o.resubscribe(mq.URL())
		px.Refuse(false)
	}
	time.Sleep(2 * time.Second)
	g.alive()
	step(t, "let the agent drain, then check")
	settle(t, g, o, 60*time.Second)
	if n := checkLimits(t, s); n == 0 {
		t.Errorf("check limits: the lease was never written to the device")
	}
	g.checkRSS()
}

// TestNetworkCutThenSlowAndLossy blackholes the path to the broker (the
// link dies without a reset) for a while, then restores it slow and lossy
// before it heals.
func TestNetworkCutThenSlowAndLossy(t *testing.T) {
	t.Parallel()
	mq := harness.StartMosquitto(t)
	px := harness.StartProxy(t, mq.Addr())
	slow := harness.StartProxy(t, px.Addr()) // shaped with SetLink below
	s, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTNET"})
	g := newGateway(t, "gw-net", gatewayOpts{Broker: slow.URL(), Poll: "100ms", Devices: []device{{"battery", addr}}})
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 10, 20*time.Second)

	cut := pick(8*time.Second, 3*time.Minute)
	step(t, "blackhole the path to the broker for %s (no reset, no FIN)", cut)
	px.Blackhole(true)
	time.Sleep(cut)
	// Bytes swallowed mid-stream cannot be replayed: end the blackholed
	// connections, as a NAT timeout would, and let the agent reconnect.
	px.Refuse(true)
	px.Blackhole(false)
	px.Cut()
	px.Refuse(false)
	g.alive()

	lossy := harness.Link{Latency: 150 * time.Millisecond, Jitter: 100 * time.Millisecond, Loss: 0.05, BytesPerSec: 32 << 10}
	dur := pick(10*time.Second, 2*time.Minute)
	before := len(o.ledger().readings)
	step(t, "path restored slow and lossy for %s: %v latency, %v jitter, %.0f%% loss, %d B/s", dur, lossy.Latency, lossy.Jitter, lossy.Loss*100, lossy.BytesPerSec)
	slow.SetLink(lossy)
	time.Sleep(dur)
	during := len(o.ledger().readings) - before
	t.Logf("over the slow, lossy path: %d readings arrived, %d chunks held back as lost", during, slow.Lost())
	if during == 0 {
		t.Errorf("check slow path: no reading got through the slow, lossy path in %s", dur)
	}
	step(t, "heal the path, let the agent drain, then check")
	slow.SetLink(harness.Link{})
	settle(t, g, o, 90*time.Second)
	checkLimits(t, s)
	g.checkRSS()
}

// TestAgentKilledRepeatedly SIGKILLs the agent every one to four seconds
// while it holds a discharge lease above its limit, and restarts it.
func TestAgentKilledRepeatedly(t *testing.T) {
	t.Parallel()
	mq := harness.StartMosquitto(t)
	s, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTKILL"})
	// Readings wait in memory for the telemetry window (and then for
	// their PUBACK) before anything stores them: an agent killed every
	// 1-4 s would deliver none with the default 5 s window, only report
	// them as a gap (which check seqs counts). Each boot must deliver
	// here, so readings go out every poll cycle.
	g := newGateway(t, "gw-kill", gatewayOpts{Broker: mq.URL(), Poll: "100ms", Window: "0s", Devices: []device{{"battery", addr}}})
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 5, 20*time.Second)
	step(t, "publish a 3000 W discharge lease (limit 1500 W)")
	harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, "kill", 1, 3000, 10*time.Minute, nil), false)

	span := pick(15*time.Second, 60*time.Second)
	step(t, "SIGKILL the agent every 1-4 s for %s, restarting it each time", span)
	kills := 0
	for end := time.Now().Add(span); time.Now().Before(end); {
		time.Sleep(time.Second + time.Duration(mrand.Int64N(int64(3*time.Second))))
		g.kill()
		kills++
		g.start()
	}
	t.Logf("killed the agent %d times", kills)
	waitReadings(t, o, 1, 10*time.Second)
	time.Sleep(2 * time.Second)
	l := settle(t, g, o, 60*time.Second)

	// A seq is never handed out twice, across boots.
	type span_ struct{ lo, hi uint64 }
	boots := map[string]*span_{}
	for seq, r := range l.readings {
		b := boots[r.Boot]
		if b == nil {
			b = &span_{seq, seq}
			boots[r.Boot] = b
		}
		b.lo, b.hi = min(b.lo, seq), max(b.hi, seq)
	}
	overlaps := 0
	for a, x := range boots {
		for b, y := range boots {
			if a < b && x.lo <= y.hi && y.lo <= x.hi {
				overlaps++
				t.Errorf("check boots: boots %s (seq %d..%d) and %s (seq %d..%d) share seqs", a, x.lo, x.hi, b, y.lo, y.hi)
			}
		}
	}
	if len(boots) < kills/2 {
		t.Errorf("check boots: readings from only %d boots reached the broker after %d kills", len(boots), kills)
	}
	if overlaps == 0 {
		t.Logf("check boots: %d boots delivered readings, their seq ranges are disjoint: ok", len(boots))
	}
	if n := checkLimits(t, s); n == 0 {
		t.Errorf("check limits: the lease was never written to the device")
	}
	g.checkRSS()
}

// simProc is a hearthsim process driven through its control socket.
type simProc struct {
	addr, control string
}

func startHearthsim(t *testing.T, args ...string) simProc {
	t.Helper()
	dir := t.TempDir()
	p := simProc{addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), control: filepath.Join(dir, "control.sock")}
	cmd := exec.Command(hearthsimBin, append([]string{"--modbus", p.addr, "--control", p.control}, args...)...)
	out, _ := os.Create(filepath.Join(dir, "hearthsim.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(p.control); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("hearthsim did not start:\n%s", b)
		}
	}
	return p
}

// send runs one control command and returns its answer line.
func (p simProc) send(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", p.control, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, cmd)
	line, err := bufio.NewReader(c).ReadString('\n')
	line = strings.TrimSpace(line)
	if err == nil && strings.HasPrefix(line, "error") {
		err = errors.New(line)
	}
	return line, err
}

// TestModbusDeviceMisbehaves runs the agent against a hearthsim process
// and, through its control socket, makes the device time out, answer with
// exceptions, corrupt its frames, drop the connection and go silent.
func TestModbusDeviceMisbehaves(t *testing.T) {
	t.Parallel()
	mq := harness.StartMosquitto(t)
	hs := startHearthsim(t, "--soc", "60", "--serial", "FLTMB")
	// No sun and a steady 300 W house load: while the agent cannot reach
	// it, the device runs its own logic, which would otherwise charge from
	// PV at whatever the panels give in daytime or cover the evening peak
	// at up to 2.2 kW. The agent's limits bind what it commands; the
	// device's own logic is bound by its own settings (docs/safety.md).
	for _, c := range []string{"pv 0", "load 300"} {
		if _, err := hs.send(c); err != nil {
			t.Fatal(err)
		}
	}
	g := newGateway(t, "gw-modbus", gatewayOpts{Broker: mq.URL(), Poll: "200ms", Devices: []device{{"battery", hs.addr}}})
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 5, 20*time.Second)
	step(t, "publish a 3000 W discharge lease (limit 1500 W)")
	harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, "mb", 1, 3000, 10*time.Minute, nil), false)

	// The device's own battery power, sampled from outside all along,
	// must never exceed the agent's limit.
	worst := 0.0
	samples := 0
	sample := func() {
		line, err := hs.send("state")
		if err != nil {
			t.Errorf("hearthsim state: %v", err)
			return
		}
		var st map[string]sim.State
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			t.Errorf("hearthsim state %q: %v", line, err)
			return
		}
		samples++
		worst = max(worst, math.Abs(float64(st["1"].BatteryW)))
	}
	hold := pick(3*time.Second, 20*time.Second)
	for _, f := range []string{"latency=1s", "exception=4", "corrupt", "drop", "noresponse", "none"} {
		step(t, "device fault %q for %s", f, hold)
		if _, err := hs.send("fault " + f); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(hold); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			sample()
		}
		g.alive()
	}
	waitGood := time.Now().Add(15 * time.Second)
	for {
		l := o.ledger()
		if len(l.eventsOfType("device_up")) > 0 {
			break
		}
		if time.Now().After(waitGood) {
			t.Fatalf("check recovery: no device_up event within 15 s of clearing the faults")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	writes, _ := hs.send("writes")
	l := settle(t, g, o, 60*time.Second)

	bad, commErr := 0, 0
	for _, r := range l.readings {
		if p, ok := r.Points["soc_pct"]; ok {
			if p.Quality == hearth.QualityCommError {
				commErr++
			}
			if p.Good() && p.Value == 0 {
				bad++
			}
		}
	}
	if commErr == 0 {
		t.Errorf("check quality: no reading carried comm_error while the device misbehaved")
	}
	if bad > 0 {
		t.Errorf("check quality: %d readings show soc_pct 0 (missing is not zero)", bad)
	}
	if bad == 0 && commErr > 0 {
		t.Logf("check quality: %d readings marked comm_error, none with a made-up 0: ok", commErr)
	}
	if n := len(l.eventsOfType("device_down")); n == 0 {
		t.Errorf("check events: no device_down event reached the broker")
	} else {
		t.Logf("check events: %d device_down, %d device_up events: ok", n, len(l.eventsOfType("device_up")))
	}
	if worst > limitDischargeW+1 {
		t.Errorf("check limits: the device's battery power reached %.0f W, beyond the %d W limit", worst, limitDischargeW)
	} else {
		t.Logf("check limits: %d samples of the device's battery power, at most %.0f W (limit %d W); device writes %s: ok", samples, worst, limitDischargeW, writes)
	}
	g.checkRSS()
}

// prefill appends n readings of one device, a second apart from an hour
// ago, to a buffer file, as an earlier agent run would have left them.
func prefill(t *testing.T, path string, n int, stopOnFull bool) int {
	t.Helper()
	st, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now().Add(-time.Hour).UTC()
	stored := 0
	for i := 0; i < n; i += 100 {
		batch := make([]hearth.Reading, 0, 100)
		for j := i; j < min(i+100, n); j++ {
			batch = append(batch, hearth.Reading{Device: "battery", Time: start.Add(time.Duration(j) * time.Second),
				Clock: hearth.ClockSynced, Boot: "0ldb00t0", MonoMS: int64(j) * 1000,
				Points: map[string]hearth.Point{
					"soc_pct": hearth.V(50 + float64(j%400)/10), "power_w": hearth.V(float64(j%3000) - 1500),
					"cell_v_max": hearth.V(3.4), "temp_c": hearth.V(24.5), "ac_hz": hearth.V(50.01),
					"ac_power_w": hearth.V(-1480), "battery_v": hearth.V(51.2), "soh_pct": hearth.Q(hearth.QualityNotImplemented),
				}})
		}
		if _, err := st.Append(batch); err != nil {
			if stopOnFull && errors.Is(err, buffer.ErrDiskFull) {
				return stored
			}
			t.Fatalf("prefill: %v", err)
		}
		stored += len(batch)
	}
	return stored
}

// TestDiskQuota fills the buffer past a small buffer.max_bytes while the
// broker is unreachable: old readings must be compacted into minutes, or
// dropped with a gap event, and every seq still accounted for.
func TestDiskQuota(t *testing.T) {
	t.Parallel()
	mq := harness.StartMosquitto(t)
	px := harness.StartProxy(t, mq.Addr())
	_, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTQUOTA"})
	dir := t.TempDir()
	const old = 8000
	step(t, "leave %d undelivered readings in the buffer, then start the agent with max_bytes 1 MiB and the broker unreachable", old)
	prefill(t, filepath.Join(dir, "hearth.db"), old, false)
	g := newGateway(t, "gw-quota", gatewayOpts{Broker: px.URL(), Poll: "100ms", Dir: dir, MaxBytes: 1 << 20,
		Devices: []device{{"battery", addr}}})
	o := observe(t, mq.URL(), g.id)
	px.Refuse(true)
	g.start()
	time.Sleep(pick(5*time.Second, 60*time.Second))
	rep, err := g.diagBuffer()
	if err != nil {
		t.Fatalf("buffer report: %v", err)
	}
	t.Logf("buffer while offline: %.0f bytes of %.0f, %v readings compacted, %v dropped", rep["file_bytes"], rep["max_bytes"], rep["readings_compacted"], rep["readings_dropped"])
	step(t, "let the broker in, drain, check")
	px.Refuse(false)
	l := settle(t, g, o, 90*time.Second)
	if len(l.aggregates) == 0 && len(l.gaps) == 0 {
		t.Errorf("check quota: neither aggregates nor gap events arrived: the quota never bit")
	} else {
		t.Logf("check quota: %d aggregates, %d gap events: ok", len(l.aggregates), len(l.gaps))
	}
	for _, a := range l.aggregates {
		if a.Device == "battery" && a.SeqTo <= old && uint64(a.N) != a.SeqTo-a.SeqFrom+1 {
			t.Errorf("check aggregates: %d..%d stands for %d readings, want %d (one device)", a.SeqFrom, a.SeqTo, a.N, a.SeqTo-a.SeqFrom+1)
		}
	}
	g.checkRSS()
}

// TestDiskFull runs the agent's buffer on a small tmpfs that another
// writer fills up while the broker is unreachable (a log gone wild): the
// agent must keep running and report the full disk; when space returns and
// the broker is back, the backlog drains and the readings it could not
// store arrive as a disk_full gap.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "size=8m")
	mq := harness.StartMosquitto(t)
	px := harness.StartProxy(t, mq.Addr())
	_, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTFULL"})
	n := prefill(t, filepath.Join(dir, "hearth.db"), 2000, false)
	// A commit every poll cycle fills the room the buffer's reserve gives
	// back within seconds; batched (the default commit_interval) it
	// would take minutes.
	g := newGateway(t, "gw-full", gatewayOpts{Broker: px.URL(), Poll: "100ms", Dir: dir, CommitInterval: "0s",
		Devices: []device{{"battery", addr}, {"inverter", addr}}})
	filler := filepath.Join(dir, "filler")
	fillDisk(t, filler)
	step(t, "stored %d readings on an 8 MiB tmpfs, filled the rest with another file, start the agent with the broker unreachable", n)
	o := observe(t, mq.URL(), g.id)
	px.Refuse(true)
	g.start()
	deadline := time.Now().Add(pick(30*time.Second, 120*time.Second))
	for {
		g.alive()
		rep, err := g.diagBuffer()
		// Full, and at least one reading refused: before that there is
		// no loss for a gap event to report.
		if refused, _ := rep["readings_refused"].(float64); err == nil && rep["disk_full"] == true && refused > 0 {
			t.Logf("buffer reports disk full, %v readings refused", refused)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check disk full: the buffer never reported a full disk with a reading refused (last report %v, err %v)", rep, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	g.alive()
	step(t, "space returns (the other file goes) and the broker is let in: the backlog drains, then check")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	px.Refuse(false)
	l := settle(t, g, o, 45*time.Second)
	full := 0
	for _, gp := range l.gaps {
		if gp.Reason == "disk_full" {
			full++
		}
	}
	if full == 0 {
		t.Errorf("check gap: no gap event with reason disk_full reached the broker")
	} else {
		t.Logf("check gap: %d disk_full gap events: ok", full)
	}
	g.checkRSS()
}

// mountTmpfs mounts a tmpfs with the given options on a folder of the
// test's own, unmounted when the test ends; it skips the test where that
// cannot be done (not root, no mount permission).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fillDisk writes path until its file system has no room left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			chunk = chunk[:4096]
			if _, err := f.Write(chunk); err != nil {
				return
			}
		}
	}
}

// TestWallClockSteps steps one agent's wall clock back an hour and then
// forward a day, through the agent's lab clock (HEARTH_CLOCK_OFFSET_FILE),
// while it holds a lease: sequence numbers keep rising whatever the
// timestamps do, readings keep flowing, the lease survives the step back
// and ends at the step forward with the fallback taken, and no write
// leaves the limits. (libfaketime cannot do this: Go reads the clock
// through the vDSO, not libc.)
func TestWallClockSteps(t *testing.T) {
	t.Parallel()
	mq := harness.StartMosquitto(t)
	s, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTCLK"})
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, "gw-clock", gatewayOpts{Broker: mq.URL(), Poll: "200ms", PubKey: pub, Devices: []device{{"battery", addr}}})
	offset := filepath.Join(t.TempDir(), "clock-offset")
	setClock := func(d string) {
		if err := os.WriteFile(offset, []byte(d), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setClock("0s")
	g.env = []string{"HEARTH_CLOCK_OFFSET_FILE=" + offset}
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 5, 20*time.Second)
	step(t, "publish a signed 3000 W discharge lease for 10 minutes (limit 1500 W)")
	harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, "clk", 1, 3000, 10*time.Minute, key), false)
	waitFor(t, "the lease to discharge", 15*time.Second, func() bool { return s.State().BatteryW > 0 })

	// newest returns the reading with the highest seq so far.
	newest := func() hearth.Reading {
		var r hearth.Reading
		for _, x := range o.ledger().readings {
			if x.Seq > r.Seq {
				r = x
			}
		}
		return r
	}
	before := newest()
	step(t, "step the wall clock back an hour")
	setClock("-1h")
	waitFor(t, "readings stamped an hour back", 15*time.Second, func() bool {
		r := newest()
		return r.Seq > before.Seq && before.Time.Sub(r.Time) > 50*time.Minute
	})
	back := newest()
	t.Logf("check step back: seq %d at %s follows seq %d at %s: seqs keep rising: ok",
		back.Seq, back.Time.Format(time.TimeOnly), before.Seq, before.Time.Format(time.TimeOnly))
	time.Sleep(2 * time.Second)
	if st := s.State(); st.Mode != sim.ModeDischarge || st.Reverted || st.BatteryW <= 0 {
		t.Errorf("check lease: after the step back the device no longer holds the lease (%s, reverted %v, %v W)", st.Mode, st.Reverted, st.BatteryW)
	} else {
		t.Logf("check lease: still discharging at %v W after the step back: ok", st.BatteryW)
	}

	step(t, "step the wall clock forward a day")
	setClock("24h")
	waitFor(t, "the lease to end as expired", 15*time.Second, func() bool {
		for _, e := range o.ledger().eventsOfType("lease_ended") {
			if e["reason"] == "expired" {
				return true
			}
		}
		return false
	})
	t.Logf("check lease: a lease_ended event with reason expired arrived: ok")
	waitFor(t, "the device to leave the lease's discharge", 15*time.Second, func() bool {
		st := s.State()
		return st.Mode == sim.ModeSelfConsumption || st.BatteryW <= 0
	})

	step(t, "the clock is corrected (offset 0)")
	setClock("0s")
	time.Sleep(2 * time.Second)

	// A real clock step moves the wall clock only: a 25 s lease, the
	// clock stepped back an hour just after it arrives, still ends about
	// 25 s after receipt (the lab clock moves the wall clock only, as a
	// real step does).
	step(t, "publish a signed 25 s lease, then step the wall clock back an hour")
	sent := time.Now()
	harness.Publish(t, mq.URL(), "hearth/v1/"+g.id+"/setpoint", powerLease(g.id, "clk25", 2, 1000, 25*time.Second, key), false)
	waitFor(t, "the 25 s lease to discharge", 15*time.Second, func() bool { return s.State().BatteryW > 0 })
	setClock("-1h")
	ended := func() bool {
		for _, e := range o.ledger().eventsOfType("lease_ended") {
			if e["lease_id"] == "clk25" {
				return true
			}
		}
		return false
	}
	waitFor(t, "the 25 s lease to end", 60*time.Second, ended)
	took := time.Since(sent)
	if took < 20*time.Second || took > 45*time.Second {
		t.Errorf("check lease: the 25 s lease ended %s after it was sent, with the wall clock an hour back; want about 25 s", took.Round(100*time.Millisecond))
	} else {
		t.Logf("check lease: the 25 s lease ended %s after it was sent, the wall clock an hour back: ok", took.Round(100*time.Millisecond))
	}
	setClock("0s")
	time.Sleep(2 * time.Second)

	step(t, "check")
	g.alive()
	settle(t, g, o, 60*time.Second)
	if n := checkLimits(t, s); n == 0 {
		t.Errorf("check limits: the lease was never written to the device")
	}
	g.checkRSS()
}

// waitFor polls cond until it holds, or fails the test naming what.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: did not happen within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAck waits until the broker has carried an ack of version v, or no
// new ack came for stall, and returns the ledger then.
func waitAck(t *testing.T, o *observer, v uint64, stall time.Duration) *ledger {
	t.Helper()
	seen, moved := -1, time.Now()
	for {
		l := o.ledger()
		if slices.ContainsFunc(l.acks, func(a hearth.Ack) bool { return a.Version == v }) {
			return l
		}
		if len(l.acks) != seen {
			seen, moved = len(l.acks), time.Now()
		} else if time.Since(moved) > stall {
			t.Logf("no ack of version %d: %d acks, and none new for %s", v, seen, stall)
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSetpointBurst publishes 1,000 signed setpoint leases within one
// second: every one must be acked, in version order, none applied out of
// order, none beyond a limit, and the last one must hold.
func TestSetpointBurst(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := harness.StartMosquitto(t)
	s, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTBURST"})
	g := newGateway(t, "gw-burst", gatewayOpts{Broker: mq.URL(), Poll: "200ms", PubKey: pub, Devices: []device{{"battery", addr}}})
	o := observe(t, mq.URL(), g.id)
	g.start()
	waitReadings(t, o, 3, 20*time.Second)

	const n = 1000
	const lastW = 1200
	power := func(v int) float64 {
		if v == n {
			return lastW
		}
		return float64((v*37)%6001 - 3000) // -3000..3000 W: a third beyond the limits
	}
	payloads := make([][]byte, n)
	for v := 1; v <= n; v++ {
		payloads[v-1] = powerLease(g.id, fmt.Sprintf("burst-%d", v), uint64(v), power(v), 10*time.Minute, priv)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(mq.URL()).SetClientID("faults-burst").
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetMaxResumePubInFlight(n))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect publisher: %v", tok.Error())
	}
	defer c.Disconnect(100)
	step(t, "publish %d signed leases, versions 1..%d, within one second", n, n)
	began := time.Now()
	toks := make([]paho.Token, n)
	for i, p := range payloads {
		toks[i] = c.Publish("hearth/v1/"+g.id+"/setpoint", 1, false, p)
		time.Sleep(time.Until(began.Add(time.Duration(i+1) * time.Second / n)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i+1, tok.Error())
		}
	}
	t.Logf("published %d leases in %s", n, time.Since(began).Round(time.Millisecond))

	// The agent makes each lease durable before it acks it, one message
	// at a time, and acks in the order it took them: the burst takes as
	// long as the disk and a loaded CPU make it. Wait for the ack of the
	// last version, which follows every other one, and give up only once
	// acks stop coming.
	l := waitAck(t, o, n, pick(30*time.Second, 60*time.Second))
	acked := map[uint64]hearth.Ack{}
	var prev uint64
	outOfOrder, wrong := 0, 0
	for _, a := range l.acks {
		if _, dup := acked[a.Version]; !dup {
			if a.Version <= prev {
				outOfOrder++
			}
			prev = a.Version
		}
		acked[a.Version] = a
		switch a.Result {
		case hearth.ResultApplied, hearth.ResultClamped:
			if a.AppliedW != nil && math.Abs(float64(*a.AppliedW)) > limitDischargeW+1 {
				wrong++
				t.Errorf("check acks: version %d acked %s at %v W, beyond the limit", a.Version, a.Result, *a.AppliedW)
			}
		default:
			wrong++
			if wrong <= 5 {
				t.Errorf("check acks: version %d acked %s (%s): each lease is newer than the last, so it must be applied or clamped", a.Version, a.Result, a.Reason)
			}
		}
	}
	missing := 0
	for v := uint64(1); v <= n; v++ {
		if _, ok := acked[v]; !ok {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("check acks: %d of %d setpoints were never acked", missing, n)
	}
	if outOfOrder > 0 {
		t.Errorf("check order: %d acks arrived after an ack for a higher version", outOfOrder)
	}
	if missing == 0 && outOfOrder == 0 && wrong == 0 {
		t.Logf("check acks: all %d acked, in version order, each applied or clamped within limits: ok", n)
	}
	step(t, "wait for the last lease (%d W) to hold on the device", lastW)
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st := s.State(); float64(st.BatteryW) == lastW {
			t.Logf("check last wins: the device discharges %d W, as version %d asks: ok", lastW, n)
			break
		}
		if time.Now().After(end) {
			t.Errorf("check last wins: the device runs %v W, not the last lease's %d W", s.State().BatteryW, lastW)
			break
		}
	}
	checkLimits(t, s)
	g.alive()
	g.checkRSS()
}
