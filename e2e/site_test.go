package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// siteConfig is two batteries under one site cap, battery2 reached
// through a proxy the test can cut.
const siteConfig = `assume_clock_synced: true
devices:
  - name: battery1
    transport: tcp
    address: %[1]s
    poll_interval: 200ms
    timeout: 500ms
  - name: battery2
    transport: tcp
    address: %[2]s
    poll_interval: 200ms
    timeout: 500ms
safety:
  soc_min_pct: 20
  soc_max_pct: 95
  max_discharge_w: 2500
  max_charge_w: 2500
  site_max_discharge_w: 3000
  ramp_w_per_s: 5000
  revert_timeout: 6s
uplink:
  broker: %[3]s
  boot_delay: 0s
`

// siteRig is the real agent over two simulated batteries, the second one
// behind a proxy, with everything the gateway publishes recorded (and
// held to the contract).
type siteRig struct {
	b1, b2 *sim.Simulator
	link2  *harness.Proxy
	rec    *harness.Recorder
	mq     *harness.Mosquitto
	gw     string
}

func startSiteRig(t *testing.T, gw string, lease hearth.Setpoint) *siteRig {
	t.Helper()
	r := &siteRig{gw: gw, mq: startBroker(t)}
	var a1, a2 string
	// Batteries in power mode do not follow PV or house load; both are
	// pinned anyway, so nothing but the agent moves them.
	r.b1, a1 = startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000, Serial: gw + "-1"})
	r.b2, a2 = startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000, Serial: gw + "-2"})
	for _, s := range []*sim.Simulator{r.b1, r.b2} {
		s.SetPV(0)
		s.SetLoad(300)
	}
	r.link2 = harness.StartProxy(t, a2)
	dir, _, cfg := newAgentConfig(t, gw, fmt.Sprintf(siteConfig, a1, r.link2.Addr(), r.mq.URL()))
	seedLease(t, dir, lease)
	r.rec = subscribe(t, r.mq.URL(), "hearth/v1/"+gw+"/#")
	startAgent(t, cfg)
	return r
}

// events returns the data of every event of type typ received so far.
func (r *siteRig) events(t *testing.T, typ string) []map[string]any {
	t.Helper()
	return gatewayEvents(t, r.rec, r.gw, typ)
}

// gatewayEvents returns the data of the events of type typ that rec
// received from gateway gw.
func gatewayEvents(t *testing.T, rec *harness.Recorder, gw, typ string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range rec.Messages() {
		if m.Topic != "hearth/v1/"+gw+"/event" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatalf("event is not JSON: %s", m.Payload)
		}
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// states returns every state published so far.
func (r *siteRig) states(t *testing.T) []hearth.State {
	t.Helper()
	var out []hearth.State
	for _, m := range r.rec.Messages() {
		if m.Topic != "hearth/v1/"+r.gw+"/state" {
			continue
		}
		var s hearth.State
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			t.Fatalf("state is not JSON: %s", m.Payload)
		}
		out = append(out, s)
	}
	return out
}

// TestSiteHoldsItsCapWhenABatteryDrops: two batteries share a 5000 W
// lease under site_max_discharge_w 3000, 1500 W each. battery2's link
// drops: it keeps discharging 1500 W on its own until its revert timer
// lapses, so battery1 must stay at 1500 W meanwhile (it used to take
// battery2's share: 2500 W, 4000 W at the site). Only then does battery1
// go to its own limit.
func TestSiteHoldsItsCapWhenABatteryDrops(t *testing.T) {
	t.Parallel()
	r := startSiteRig(t, "gw-site-cap", discharge(5, time.Now().UTC(), 10*time.Minute, 5000, hearth.ModeAuto))
	waitSim(t, r.b1, "battery1 to discharge its 1500 W share", 20*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })
	waitSim(t, r.b2, "battery2 to discharge its 1500 W share", 10*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })

	r.link2.Refuse(true)
	r.link2.Cut()
	// Until battery2's revert timer (6 s from its last write) lapses, it
	// runs its last command, and the site stays at its cap.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		s1, s2 := r.b1.State(), r.b2.State()
		if s2.Reverted {
			break
		}
		if site := s1.BatteryW + s2.BatteryW; site > 3000 {
			t.Fatalf("battery2 unreachable, still discharging %v W: battery1 at %v W, the site at %v W over site_max_discharge_w 3000", s2.BatteryW, s1.BatteryW, site)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s2 := r.b2.State(); s2.BatteryW != 1500 {
		t.Fatalf("battery2 behind the cut link: %v W, want its last command, 1500 W, held by itself", s2.BatteryW)
	}
	// Once its command has lapsed, battery2 is back on its own logic and
	// battery1 takes up to its own limit.
	waitSim(t, r.b2, "battery2's revert timer to lapse", 15*time.Second, func(st sim.State) bool { return st.Reverted })
	waitSim(t, r.b1, "battery1 to take up to its 2500 W limit", 10*time.Second, func(st sim.State) bool { return st.BatteryW == 2500 })
}

// TestLostLinkIsOneDeviceDown: battery2's link drops for two seconds.
// That is one device_down (with the error and its cause) and one
// device_up for battery2, no trip or
// clear at all (it used to be a trip per rule, cell temperatures on a
// battery without the sensor among them, none naming the device); the
// state says battery2 is down and battery1 ok; a lease sent meanwhile is
// acked with battery2 excluded. A trip names its device.
func TestLostLinkIsOneDeviceDown(t *testing.T) {
	t.Parallel()
	const gw = "gw-site-down"
	r := startSiteRig(t, gw, discharge(5, time.Now().UTC(), 10*time.Minute, 1000, hearth.ModeAuto))
	waitSim(t, r.b2, "battery2 to discharge its 500 W share", 20*time.Second, func(st sim.State) bool { return st.BatteryW == 500 })

	r.link2.Refuse(true)
	r.link2.Cut()
	r.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(r.events(t, "device_down")) > 0 })
	r.rec.WaitFor(t, 5*time.Second, func([]harness.Message) bool {
		ss := r.states(t)
		return len(ss) > 0 && ss[len(ss)-1].Devices["battery2"].Safety == "device_down"
	})
	ss := r.states(t)
	if st := ss[len(ss)-1]; st.Devices["battery1"].Safety != "ok" {
		t.Errorf("state with battery2 down: %+v, want battery1 ok", st.Devices)
	}
	p := hearth.Watts(1200)
	sp, _ := json.Marshal(hearth.Setpoint{ID: "partial", Version: 6, IssuedAt: time.Now().UTC(), ValidUntil: time.Now().Add(10 * time.Minute).UTC(),
		Mode: hearth.ModePower, PowerW: &p, Fallback: hearth.ModeAuto})
	sendSetpoint(t, r.rec, r.mq.URL(), gw, sp)
	for _, ack := range acks(t, r.rec.Messages(), gw) {
		if ack.Excluded["battery2"] != "device_down" || len(ack.Excluded) != 1 {
			t.Errorf("ack of a lease with battery2 down: %+v; want battery2 excluded as device_down", ack)
		}
	}
	time.Sleep(time.Second)
	r.link2.Refuse(false)
	r.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(r.events(t, "device_up")) > 0 })
	r.rec.WaitFor(t, 5*time.Second, func([]harness.Message) bool {
		ss := r.states(t)
		return len(ss) > 0 && ss[len(ss)-1].Devices["battery2"].Safety == "ok"
	})
	if d := r.events(t, "device_down"); len(d) != 1 || d[0]["device"] != "battery2" || d[0]["cause"] == nil || d[0]["error"] == nil {
		t.Errorf("device_down events %v, want one, for battery2, with its error and cause", d)
	}
	if tr, cl := r.events(t, "trip"), r.events(t, "trip_cleared"); len(tr)+len(cl) != 0 {
		t.Errorf("a lost link gave trips %v and clears %v, want none", tr, cl)
	}

	// A trip names its device.
	r.b2.SetTemp(60)
	r.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(r.events(t, "trip")) > 0 })
	if tr := r.events(t, "trip"); tr[0]["device"] != "battery2" || tr[0]["rule"] != "temp_c_max" {
		t.Errorf("trip %v, want temp_c_max on battery2", tr[0])
	}
	if strings.Contains(fmt.Sprint(r.events(t, "trip")), "cell_temp") {
		t.Errorf("a trip of a cell temperature on batteries without the sensor: %v", r.events(t, "trip"))
	}
}

// meterConfig is one battery and the site meter, which its simulator
// also serves (model 203), polled as a device of its own.
const meterConfig = `assume_clock_synced: true
devices:
  - name: battery
    transport: tcp
    address: %[1]s
    poll_interval: 200ms
    timeout: 500ms
  - name: meter
    transport: tcp
    address: %[1]s
    poll_interval: 200ms
    timeout: 500ms
safety:
  soc_min_pct: 20
  soc_max_pct: 95
  max_discharge_w: 2000
  max_charge_w: 2000
  import_limit_w: 2500
  ramp_w_per_s: 5000
  revert_timeout: 6s
  meter_device: meter
  meter_point: grid_power_w
uplink:
  broker: %[2]s
  boot_delay: 0s
`

// startMeterRig runs the agent over one simulated battery with its meter,
// PV and house load pinned, the lease seeded, everything published
// recorded.
func startMeterRig(t *testing.T, gw string, cfg sim.Config, loadW float64, lease hearth.Setpoint) (*sim.Simulator, *siteRig) {
	t.Helper()
	r := &siteRig{gw: gw, mq: startBroker(t)}
	cfg.Meter, cfg.InitialSoC, cfg.MaxChargeW, cfg.MaxDischargeW, cfg.Serial = true, 60, 5000, 5000, gw
	s, addr := startSim(t, cfg)
	s.SetPV(0)
	s.SetLoad(loadW)
	dir, _, path := newAgentConfig(t, gw, fmt.Sprintf(meterConfig, addr, r.mq.URL()))
	seedLease(t, dir, lease)
	r.rec = subscribe(t, r.mq.URL(), "hearth/v1/"+gw+"/#")
	startAgent(t, path)
	return s, r
}

// TestImportLimitBindingMidLeaseIsAClamp: a charge lease runs within
// import_limit_w until the house load rises; the import limit then binds,
// and that is one clamped event naming the rule and its limit (it used to
// be neither a clamp nor a trip).
func TestImportLimitBindingMidLeaseIsAClamp(t *testing.T) {
	t.Parallel()
	p := hearth.Watts(-1500)
	now := time.Now().UTC()
	charge := hearth.Setpoint{ID: "e2e-charge", Version: 5, IssuedAt: now, ValidUntil: now.Add(10 * time.Minute),
		Mode: hearth.ModePower, PowerW: &p, Fallback: hearth.ModeAuto}
	s, r := startMeterRig(t, "gw-site-import", sim.Config{}, 300, charge)
	waitSim(t, s, "the battery to charge at 1500 W", 20*time.Second, func(st sim.State) bool { return st.BatteryW == -1500 })
	if cl := r.events(t, "clamped"); len(cl) != 0 {
		t.Fatalf("clamps %v while importing 1800 W of 2500 W", cl)
	}
	s.SetLoad(2000) // 3500 W of import with the battery: over the limit
	waitSim(t, s, "the charge to fall to 500 W under the import limit", 10*time.Second, func(st sim.State) bool {
		return st.BatteryW >= -510 && st.BatteryW <= -490
	})
	time.Sleep(time.Second) // five more polls: no second clamp for the same binding
	cl := r.events(t, "clamped")
	if len(cl) != 1 || cl[0]["rule"] != "import_limit_w" || cl[0]["limit_w"] != 2500.0 {
		t.Errorf("clamped events %v, want one by import_limit_w with limit_w 2500", cl)
	}
}

// TestDivergingLoopTripsImplausible: under self_consumption, a battery
// that reports its power with the wrong sign, consistently (its current
// agrees, it gives no charge status), drives the loop from one limit to
// the other. The agent trips implausible with the detail and hands the
// battery back, instead of swinging ±2000 W for minutes.
func TestDivergingLoopTripsImplausible(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	sc := hearth.Setpoint{ID: "e2e-sc", Version: 5, IssuedAt: now, ValidUntil: now.Add(10 * time.Minute),
		Mode: hearth.ModeSelfConsumption, Fallback: hearth.ModeAuto}
	_, r := startMeterRig(t, "gw-site-diverge", sim.Config{InvertPowerSign: true}, 900, sc)
	r.rec.WaitFor(t, 30*time.Second, func([]harness.Message) bool {
		for _, e := range r.events(t, "trip") {
			if e["rule"] == "implausible" {
				return true
			}
		}
		return false
	})
	for _, e := range r.events(t, "trip") {
		if e["rule"] != "implausible" {
			continue
		}
		if e["device"] != "battery" || !strings.Contains(fmt.Sprint(e["detail"]), "the loop diverges") {
			t.Errorf("trip %v, want implausible on battery with the detail", e)
		}
	}
}
