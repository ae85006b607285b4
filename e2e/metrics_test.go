package e2e

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

var metricSample = regexp.MustCompile(`^(hearth_[a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+-]+)$`)

// scrape reads /metrics and returns its samples by name and labels
// ("name{labels}"), failing on any line that is not exposition format
// and on a counter not named _total.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for i, line := range strings.Split(strings.TrimSpace(httpGet(t, url)), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" && f[3] == "counter" && !strings.HasSuffix(f[2], "_total") {
			t.Errorf("counter %s is not named _total", f[2])
		}
		if strings.HasPrefix(line, "# ") {
			continue
		}
		m := metricSample.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %d is not a valid sample: %q", i+1, line)
			continue
		}
		v, _ := strconv.ParseFloat(m[4], 64)
		out[m[1]+m[2]] = v
	}
	return out
}

// TestMetricsPerDevice scrapes a running agent with a battery, a meter and
// a dead device: each live device's main points are gauges in base units
// that follow the simulator, the dead one has none (missing is not 0),
// the uplink names its broker, a local lease shows its remaining time,
// and / on the metrics listener links to /metrics.
func TestMetricsPerDevice(t *testing.T) {
	t.Parallel()
	m := startBroker(t)
	bat, batAddr := startSim(t, sim.Config{UnitID: 1, Serial: "MET-BAT-0001", InitialSoC: 64})
	bat.SetPV(1500)
	_, meterAddr := startSim(t, sim.Config{UnitID: 1, Serial: "MET-MTR-0001", Meter: true, PVPeakW: 1})
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	_, sock, cfg := newAgentConfig(t, "gw-metrics", `metrics_listen: `+addr+`
devices:
  - {name: battery, address: "`+batAddr+`", poll_interval: 300ms, timeout: 300ms}
  - {name: meter, address: "`+meterAddr+`", poll_interval: 300ms, timeout: 300ms}
  - {name: dead, address: "`+deadAddr(t)+`", poll_interval: 300ms, timeout: 300ms}
safety:
  meter_device: meter
uplink:
  broker: `+m.URL()+`
  boot_delay: 0s
`)
	startAgent(t, cfg)
	waitListening(t, addr)
	base := "http://" + addr

	if body := httpGet(t, base+"/"); !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/ on the metrics listener does not link to /metrics:\n%s", body)
	}
	var got map[string]float64
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for got = scrape(t, base+"/metrics"); !ok(); got = scrape(t, base+"/metrics") {
			if time.Now().After(deadline) {
				t.Fatalf("%s; metrics:\n%v", what, got)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wait("the battery's PV power follows the simulator", func() bool {
		return got[`hearth_device_dc_power_watts{device="battery"}`] == 1500 && got[`hearth_uplink_connected`] == 1
	})
	bat.SetPV(2300)
	wait("the battery's PV power follows a change", func() bool {
		return got[`hearth_device_dc_power_watts{device="battery"}`] == 2300
	})
	if soc, want := got[`hearth_device_state_of_charge_ratio{device="battery"}`], bat.State().SoCPct/100; math.Abs(soc-want) > 0.01 {
		t.Errorf("state of charge ratio %g, the simulator's %g", soc, want)
	}
	if _, ok := got[`hearth_device_grid_power_watts{device="meter"}`]; !ok {
		t.Error("no grid power gauge for the meter")
	}
	for k := range got {
		if strings.Contains(k, `device="dead"`) && !strings.HasPrefix(k, "hearth_device_up") && !strings.HasPrefix(k, "hearth_device_polls_total") &&
			!strings.HasPrefix(k, "hearth_device_errors_total") && !strings.HasPrefix(k, "hearth_device_poll_seconds") && !strings.HasPrefix(k, "hearth_device_reading_age_seconds") && !strings.HasPrefix(k, "hearth_device_safety_") {
			t.Errorf("the dead device has a value: %s = %g", k, got[k])
		}
	}
	if got[`hearth_device_safety_rule_tripped{device="dead",rule="device_down"}`] != 1 {
		t.Errorf("the dead device's safety does not say device_down")
	}
	if got[`hearth_device_safety_ok{device="battery"}`] != 1 {
		t.Errorf("battery's safety gauge: %v", got[`hearth_device_safety_ok{device="battery"}`])
	}
	if got[`hearth_device_up{device="dead"}`] != 0 {
		t.Error("the dead device is up")
	}
	if got[`hearth_uplink_broker_info{broker="`+m.URL()+`"}`] != 1 {
		t.Errorf("uplink broker info: %v", got)
	}
	for _, name := range []string{"hearth_buffer_pending_readings", "hearth_buffer_oldest_pending_seconds", "hearth_buffer_readings_dropped_total", "hearth_uplink_connects_total"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s", name)
		}
	}

	if _, stderr, code := hearthCLI(t, nil, "mode", "set", "idle", "--for", "10m", "--socket", sock); code != 0 {
		t.Fatalf("hearth mode set: exit %d: %s", code, stderr)
	}
	wait("the local lease's remaining time", func() bool {
		r := got["hearth_lease_remaining_seconds"]
		return got["hearth_lease_active"] == 1 && r > 500 && r <= 600
	})
}
