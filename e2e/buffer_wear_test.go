package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestAgentWear measures what the real agent writes to storage per reading
// with a healthy uplink: `hearth run` polls four simulated devices at 1 Hz
// and publishes to a real Mosquitto; write_bytes from /proc/PID/io is read
// after a settling time and again HEARTH_WEAR later, and divided by the
// readings received meanwhile. It is a measurement, not a check, and runs
// only when asked:
//
//	go build -o /tmp/hearth ./cmd/hearth
//	HEARTH_WEAR=60s HEARTH_WEAR_BIN=/tmp/hearth go test ./e2e/ -run TestAgentWear -v
//
// HEARTH_WEAR_BIN defaults to the race-enabled build the suite uses.
func TestAgentWear(t *testing.T) {
	span, err := time.ParseDuration(os.Getenv("HEARTH_WEAR"))
	if err != nil || span <= 0 {
		t.Skip("set HEARTH_WEAR (e.g. 60s) to measure bytes written per reading")
	}
	bin := hearthBin
	if b := os.Getenv("HEARTH_WEAR_BIN"); b != "" {
		bin = b
	}
	const gw = "gw-wear"
	mq := startBroker(t)
	var devs []devSpec
	for i := range 4 {
		_, addr := startSim(t, sim.Config{InitialSoC: 50 + float64(i), Serial: fmt.Sprintf("WEAR%04d", i)})
		devs = append(devs, devSpec{fmt.Sprintf("dev%d", i), addr})
	}
	dir := t.TempDir()
	cfg := writeConfig(t, dir, gw, mq.URL(), "1s", devs)
	rec := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	saved := hearthBin
	hearthBin = bin
	agent := startAgent(t, cfg)
	hearthBin = saved

	rec.WaitFor(t, 30*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) >= 8 })
	time.Sleep(5 * time.Second) // past start-up: schema, first status, first state

	sample := func() (int64, int, int) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", agent.Pid()))
		if err != nil {
			t.Skipf("no per-process I/O accounting: %v", err)
		}
		var wb int64
		for _, line := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(line, []byte("write_bytes: ")); ok {
				wb, _ = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			}
		}
		rs := readings(t, rec.Messages(), gw)
		size := 0
		for _, r := range rs {
			j, _ := json.Marshal(r)
			size += len(j)
		}
		return wb, len(seqSet(rs)), size / max(len(rs), 1)
	}
	wb0, n0, _ := sample()
	time.Sleep(span)
	wb1, n1, payload := sample()
	n := n1 - n0
	if n <= 0 {
		t.Fatalf("no readings delivered in %s", span)
	}
	t.Logf("%s: %d readings delivered, %d bytes written: %d B/reading (JSON payload %d B/reading, %.1fx)",
		span, n, wb1-wb0, (wb1-wb0)/int64(n), payload, float64(wb1-wb0)/float64(n)/float64(payload))
	if _, err := agent.Stop(5 * time.Second); err != nil {
		t.Logf("SIGTERM: %v", err) // the figure above stands either way
	}
}
