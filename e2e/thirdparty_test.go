package e2e

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/harness"
)

const thirdPartyPython = "/usr/bin/python3"

// TestThirdPartySunSpecDevice runs the agent against a SunSpec device that
// is not hearth's simulator: a register image written independently from
// the SunSpec specification, with other scale factors, served by pymodbus.
// Every mapped point must arrive with the device's true value, and points
// the device marks as not implemented must say so.
func TestThirdPartySunSpecDevice(t *testing.T) {
	t.Parallel()
	checkThirdParty(t, "gw-thirdparty")
}

// TestThirdPartySunSpecDeviceLies: the same device reporting a SoC of
// 250 % (raw 25000 at SoC_SF -2). The agent publishes soc_pct as
// out_of_range with no value, and every other point as before.
func TestThirdPartySunSpecDeviceLies(t *testing.T) {
	t.Parallel()
	checkThirdParty(t, "gw-thirdparty-lies", "--soc-raw", "25000")
}

// checkThirdParty starts the fixture with args and the agent polling it,
// and checks the second reading published against the fixture's truth.
func checkThirdParty(t *testing.T, gw string, args ...string) {
	t.Helper()
	if _, err := os.Stat(thirdPartyPython); err != nil {
		t.Fatalf("%s missing: install python3 and python3-pymodbus (scripts/deps.sh does)", thirdPartyPython)
	}
	desc := startFixture(t, thirdPartyPython, append([]string{"../test/fixtures/thirdparty_sunspec.py"}, args...)...)
	var port int
	var expect map[string]*float64
	var identity map[string]string
	var quality map[string]hearth.Quality
	if err := json.Unmarshal(desc["port"], &port); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(desc["expect"], &expect)
	json.Unmarshal(desc["identity"], &identity)
	json.Unmarshal(desc["quality"], &quality)
	if len(expect) < 10 {
		t.Fatalf("fixture expects only %d points", len(expect))
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitListening(t, addr)

	mq := startBroker(t)
	rec := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	dir := t.TempDir()
	startAgent(t, writeConfig(t, dir, gw, mq.URL(), "500ms", []devSpec{{"inverter", addr}}))

	msgs := rec.WaitFor(t, 30*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) >= 2 })
	r := readings(t, msgs, gw)[1]
	for name, want := range expect {
		got, ok := r.Points[name]
		switch {
		case !ok:
			t.Errorf("%s: missing from the reading", name)
		case want == nil:
			if got.Quality != hearth.QualityNotImplemented {
				t.Errorf("%s: got %+v, want quality not_implemented", name, got)
			}
		case !got.Good():
			t.Errorf("%s: got quality %s, want %v", name, got.Quality, *want)
		case math.Abs(got.Value-*want) > 1e-9*math.Max(1, math.Abs(*want)):
			t.Errorf("%s: got %v, want %v", name, got.Value, *want)
		}
	}
	for name, want := range quality {
		if got := r.Points[name]; got.Quality != want {
			t.Errorf("%s: got %+v, want quality %s and no value", name, got, want)
		}
	}
	status := ""
	for _, m := range msgs {
		if m.Topic == "hearth/v1/"+gw+"/status" {
			status = string(m.Payload)
		}
	}
	for _, v := range identity {
		if !strings.Contains(status, v) {
			t.Errorf("status record lacks device identity %q: %s", v, status)
		}
	}
}
