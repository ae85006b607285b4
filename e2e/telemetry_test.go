package e2e

import (
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// startSim serves a simulator on a free loopback port until the test ends.
func startSim(t *testing.T, cfg sim.Config) (*sim.Simulator, string) {
	t.Helper()
	return harness.StartSim(t, cfg)
}

// seqSet collects the distinct sequence numbers received.
func seqSet(rs []hearth.Reading) map[uint64]bool {
	m := map[uint64]bool{}
	for _, r := range rs {
		m[r.Seq] = true
	}
	return m
}

func maxSeq(m map[uint64]bool) uint64 {
	var x uint64
	for s := range m {
		x = max(x, s)
	}
	return x
}

// TestTelemetryThroughBrokerRestart polls the simulator with the real agent
// process, checks that what reaches a real Mosquitto equals what the
// simulator holds, kills and restarts the broker, and checks that no
// sequence number is missing afterwards.
func TestTelemetryThroughBrokerRestart(t *testing.T) {
	t.Parallel()
	const gw = "gw-e2e"
	mq := startBroker(t)
	// The agent reaches the broker through a proxy, so the test can hold it
	// off until a fresh subscriber is listening after the restart.
	px := harness.StartProxy(t, mq.Addr())
	s, simAddr := startSim(t, sim.Config{InitialSoC: 55, Serial: "E2E0001"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, gw, px.URL(), "200ms", []devSpec{{"battery", simAddr}})
	rec := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	agent := startAgent(t, cfg)

	msgs := rec.WaitFor(t, 30*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) >= 10 })
	rs := readings(t, msgs, gw)
	last := rs[len(rs)-1]
	soc, ok := last.Points["soc_pct"]
	if !ok || !soc.Good() {
		t.Fatalf("last reading has no soc_pct value: %+v", last.Points)
	}
	if want := s.State().SoCPct; math.Abs(soc.Value-want) > 0.1 {
		t.Errorf("reported SoC %.3f %%, simulator holds %.3f %%: off by more than 0.1", soc.Value, want)
	}
	for _, name := range []string{"power_w", "ac_hz", "cell_v_max", "ac_power_w"} {
		if p := last.Points[name]; !p.Good() {
			t.Errorf("point %s has no value: %+v", name, p)
		}
	}
	if hz := last.Points["ac_hz"].Value; hz < 49 || hz > 51 {
		t.Errorf("ac_hz = %v, want about 50", hz)
	}
	if last.Device != "battery" || last.Boot == "" || last.Time.IsZero() || (last.Clock != hearth.ClockSynced && last.Clock != hearth.ClockUnsynced) {
		t.Errorf("reading metadata incomplete: %+v", last)
	}
	if !hasTopic(msgs, "hearth/v1/"+gw+"/status", `"online"`) {
		t.Errorf("no online status record was published")
	}
	if !hasTopic(msgs, "hearth/v1/"+gw+"/status", "E2E0001") {
		t.Errorf("status record does not carry the device serial from SunSpec model 1")
	}

	// Outage: cut the agent off, kill the broker, keep it down a while.
	px.Refuse(true)
	px.Cut()
	time.Sleep(300 * time.Millisecond)
	before := seqSet(readings(t, rec.Messages(), gw))
	mq.Stop()
	time.Sleep(4 * time.Second)
	mq.Start()
	rec2 := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	px.Refuse(false)
	target := maxSeq(before) + 30 // the outage alone produced about 22 readings
	union := func(m []harness.Message) map[uint64]bool {
		all := map[uint64]bool{}
		for s := range before {
			all[s] = true
		}
		for s := range seqSet(readings(t, m, gw)) {
			all[s] = true
		}
		return all
	}
	// Wait until everything up to target has come, or the time is up; the
	// assertions below say what is missing.
	deadline := time.Now().Add(60 * time.Second)
	complete := func(all map[uint64]bool) bool {
		hi := maxSeq(all)
		if hi < target {
			return false
		}
		for s := uint64(1); s <= hi; s++ {
			if !all[s] {
				return false
			}
		}
		return true
	}
	for time.Now().Before(deadline) {
		// Readings whose live publish the cut interrupted wait in memory
		// up to buffer.commit_interval, then come as backfill, after
		// newer live ones.
		if complete(union(rec2.Messages())) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	all := union(rec2.Messages())
	var seqs []uint64
	for s := range all {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	var missing []uint64
	for s := seqs[0]; s <= seqs[len(seqs)-1]; s++ {
		if !all[s] {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		t.Errorf("sequence numbers %d..%d received with %d missing: %v", seqs[0], seqs[len(seqs)-1], len(missing), missing)
	}
	backfilled := 0
	for _, m := range rec2.Messages() {
		if strings.HasSuffix(m.Topic, "/telemetry/backfill") {
			backfilled++
		}
	}
	if backfilled == 0 {
		t.Errorf("the readings taken during the outage did not arrive on telemetry/backfill")
	}

	took, err := agent.Stop(5 * time.Second)
	if err != nil {
		t.Fatalf("SIGTERM: %v (after %s)", err, took)
	}
	rec2.WaitFor(t, 5*time.Second, func(m []harness.Message) bool {
		return hasTopic(m, "hearth/v1/"+gw+"/status", `"offline"`)
	})
}

// TestConfigCheckNamesLines runs `hearth config check` on a config with a
// mistyped key and a bad duration: both are reported with their lines, the
// exit code is non-zero, and nothing is created.
func TestConfigCheckNamesLines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/bad.yaml"
	data := "gateway_id: gw-1\n" +
		"data_dir: " + dir + "/data\n" +
		"devices:\n" +
		"  - name: battery\n" +
		"    address: 127.0.0.1:502\n" +
		"    poll_intervall: 1s\n" +
		"    timeout: 3 seconds\n" +
		"uplink:\n" +
		"  broker: tcp://127.0.0.1:1883\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(hearthBin, "config", "check", path).CombinedOutput()
	exit, ok := err.(*exec.ExitError)
	if !ok || exit.ExitCode() != 3 {
		t.Fatalf("exit: %v, want exit code 3; output:\n%s", err, out)
	}
	for _, want := range []string{"bad.yaml:6: unknown key \"poll_intervall\"", "bad.yaml:7: invalid duration \"3 seconds\""} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(dir + "/data"); !os.IsNotExist(err) {
		t.Errorf("config check created the data_dir (stat: %v)", err)
	}
}
