package drivers

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
)

// staticsRig is a simulator on loopback Modbus TCP whose clock is the
// clock of the device's polls, and the bus the device polls it through.
type staticsRig struct {
	sim   *sim.Simulator
	dev   *SunSpecDevice
	bus   *Bus
	clock time.Time
}

func newStaticsRig(t *testing.T, cfg sim.Config) *staticsRig {
	t.Helper()
	r := &staticsRig{clock: night}
	cfg.Now = func() time.Time { return r.clock }
	r.sim = sim.New(cfg)
	r.bus = openBus(t, serveSims(t, TransportTCP, r.sim))
	r.dev = NewSunSpecDevice("battery", r.bus, 1)
	return r
}

// poll advances the clock by step, polls, and returns the reading and the
// requests the poll made.
func (r *staticsRig) poll(t *testing.T, step time.Duration) (hearth.Reading, uint64) {
	t.Helper()
	r.clock = r.clock.Add(step)
	before := r.bus.Stats().Requests
	rd, err := r.dev.Poll(context.Background(), func() time.Time { return r.clock })
	if err != nil {
		t.Fatal(err)
	}
	return rd, r.bus.Stats().Requests - before
}

// TestSunSpecStaticsOnSchedule: after discovery a poll reads only the
// points' registers; the scale factors, ratings and model 1's strings are
// read again once StaticRefresh has passed, and after a clock step back.
func TestSunSpecStaticsOnSchedule(t *testing.T) {
	t.Parallel()
	r := newStaticsRig(t, sim.Config{InitialSoC: 60})
	r.poll(t, 0)
	specs, plan := r.dev.PollPlan()
	statics, staticPlan := r.dev.StaticPlan()
	for _, st := range statics {
		for _, sp := range specs {
			if st.Address >= sp.Address && st.Address < sp.Address+sp.Size() {
				t.Errorf("static register %s at %d is planned as a point every poll (%s)", st.Name, st.Address, sp.Name)
			}
		}
	}
	for _, c := range []struct {
		step time.Duration
		want int
		what string
	}{
		{time.Second, len(plan), "a second later"},
		{StaticRefresh - 2*time.Second, len(plan), "just before the refresh"},
		{time.Second, len(plan) + len(staticPlan), "at the refresh"},
		{time.Second, len(plan), "after the refresh"},
		{-time.Hour, len(plan) + len(staticPlan), "after the clock stepped back"},
	} {
		rd, n := r.poll(t, c.step)
		if int(n) != c.want {
			t.Errorf("%s: %d requests, want %d", c.what, n, c.want)
		}
		wantTruth(t, rd, map[string]float64{"soc_pct": r.sim.State().SoCPct}, c.what)
	}
	if id := r.dev.Identity(); id.Serial != sim.DefaultSerial {
		t.Errorf("identity %+v, want serial %s", id, sim.DefaultSerial)
	}
}

// truth is what the simulator holds, for the points the scale factors in
// these tests change.
func truth(s *sim.Simulator) map[string]float64 {
	st := s.State()
	return map[string]float64{"soc_pct": st.SoCPct, "power_w": float64(st.BatteryW), "temp_c": st.TempC, "battery_v": st.BatteryV}
}

// TestSunSpecScaleFactorStepsNeverPublished: the device changes scale
// factors between polls, as a device whose configuration changed. A value
// that steps by a power of ten (power 2000 W at W_SF 0 → 1, raw 2000 →
// 200; temperature at Tmp_SF -1 → 0), a value that decodes out of range
// at the kept scale factor (SoC at SoC_SF -1 → -2: 600 %) and a scale
// factor the poll's own read carries (model 103 W_SF) are each read again
// before the reading is made: no reading carries a value at the old
// scale, and the extra reads happen in that poll only.
func TestSunSpecScaleFactorStepsNeverPublished(t *testing.T) {
	t.Parallel()
	r := newStaticsRig(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000})
	r.sim.SetLoad(2000) // night: the battery covers the house, 2000 W
	r.sim.SetTemp(25)
	r.poll(t, 0)
	_, plan := r.dev.PollPlan()
	_, staticPlan := r.dev.StaticPlan()
	for _, c := range []struct {
		model uint16
		sf    string
		to    int16
	}{
		{802, "W_SF", 1},
		{103, "Tmp_SF", 0},
		{802, "SoC_SF", -2},
		{802, "V_SF", 0},
		{103, "W_SF", 1},
		{802, "W_SF", 0},
	} {
		if err := r.sim.SetScaleFactor(c.model, c.sf, c.to); err != nil {
			t.Fatal(err)
		}
		rd, n := r.poll(t, time.Second)
		if want := 2*len(plan) + len(staticPlan); int(n) != want {
			t.Errorf("%d.%s → %d: %d requests, want %d (points, statics, points again)", c.model, c.sf, c.to, n, want)
		}
		wantTruth(t, rd, truth(r.sim), c.sf)
		if _, n := r.poll(t, time.Second); int(n) != len(plan) {
			t.Errorf("%d.%s → %d: the next poll made %d requests, want %d", c.model, c.sf, c.to, n, len(plan))
		}
	}
}

// wantTruth checks each point of want against the reading, within the
// resolution the scale factors give (a tenth of a unit, 10 W); a value
// at the wrong scale is off by a factor of ten or more.
func wantTruth(t *testing.T, rd hearth.Reading, want map[string]float64, what string) {
	t.Helper()
	for name, v := range want {
		p := rd.Points[name]
		tol := 1.0
		if name == "power_w" {
			tol = 10
		}
		if !p.Good() || math.Abs(p.Value-v) > tol {
			t.Errorf("%s: %s = %+v, the device holds %g", what, name, p, v)
		}
	}
}

// TestSunSpecScaleFactorBound: a scale factor change no check can see (a
// SoC of 5 % at SoC_SF -1 → 0: raw 50 → 5, below the 10 counts a step is
// judged from, and in range at the old scale) is used at its old value
// for at most StaticRefresh: every reading from then on is right.
func TestSunSpecScaleFactorBound(t *testing.T) {
	t.Parallel()
	r := newStaticsRig(t, sim.Config{InitialSoC: 5})
	r.poll(t, 0)
	if err := r.sim.SetScaleFactor(802, "SoC_SF", 0); err != nil {
		t.Fatal(err)
	}
	wrong := 0
	for elapsed := time.Second; elapsed <= StaticRefresh+5*time.Second; elapsed += time.Second {
		rd, _ := r.poll(t, time.Second)
		p, soc := rd.Points["soc_pct"], r.sim.State().SoCPct
		ok := p.Good() && math.Abs(p.Value-soc) <= 1
		if !ok {
			wrong++
		}
		if !ok && elapsed >= StaticRefresh {
			t.Errorf("%v after SoC_SF changed: soc_pct %+v, the device holds %g %%", elapsed, p, soc)
		}
	}
	if max := int(StaticRefresh / time.Second); wrong > max {
		t.Errorf("%d readings at the old scale, more than the %d polls of StaticRefresh", wrong, max)
	}
}

// TestSunSpecSerialChangeRediscovers: a serial number that differs at a
// static refresh means another device answers at the unit: that poll
// fails with every point comm_error, and the next discovers the new one.
func TestSunSpecSerialChangeRediscovers(t *testing.T) {
	t.Parallel()
	r := newStaticsRig(t, sim.Config{InitialSoC: 60})
	r.poll(t, 0)
	if err := r.sim.SetRaw(1, "SN", 0x4e45); err != nil { // "NE" in the last register
		t.Fatal(err)
	}
	r.clock = r.clock.Add(StaticRefresh)
	rd, err := r.dev.Poll(context.Background(), func() time.Time { return r.clock })
	if err == nil {
		t.Fatal("the poll after the serial changed succeeded")
	}
	for name, p := range rd.Points {
		if p.Quality != hearth.QualityCommError {
			t.Errorf("%s = %+v, want comm_error", name, p)
		}
	}
	rd, _ = r.poll(t, time.Second)
	wantTruth(t, rd, map[string]float64{"soc_pct": r.sim.State().SoCPct}, "after rediscovery")
	if id := r.dev.Identity(); id.Serial == sim.DefaultSerial || !strings.HasSuffix(id.Serial, "NE") {
		t.Errorf("identity after rediscovery %+v, want the new serial", id)
	}
}

// TestSunSpecFlippingLoadCheapPolls: a house load that swings 200 ↔ 2000 W
// between polls moves the battery's power (802 W, 103 W) by a power of
// ten at every poll, as a scale factor step would. The first such step
// costs a static read; the static registers come back as kept, so the
// steps after it within ScaleJumpHoldOff cost none, and a static read
// answers them at the end of the hold-off: at most one static read per
// ScaleJumpHoldOff, and never the points read twice. Every reading still
// matches the simulator.
func TestSunSpecFlippingLoadCheapPolls(t *testing.T) {
	t.Parallel()
	r := newStaticsRig(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000})
	r.sim.SetLoad(2000)
	r.poll(t, 0)
	_, plan := r.dev.PollPlan()
	_, staticPlan := r.dev.StaticPlan()
	const polls = 40 // seconds, one poll each, within one StaticRefresh
	var total uint64
	for i := range polls {
		load := 200.0
		if i%2 == 1 {
			load = 2000
		}
		r.sim.SetLoad(load)
		rd, n := r.poll(t, time.Second)
		total += n
		wantTruth(t, rd, truth(r.sim), fmt.Sprintf("poll %d at a load of %g W", i, load))
		if int(n) > len(plan)+len(staticPlan) {
			t.Errorf("poll %d: %d requests, want at most %d (points, statics): the points read twice for a value that only moved", i, n, len(plan)+len(staticPlan))
		}
	}
	statics := polls/int(ScaleJumpHoldOff/time.Second) + 1
	if want := polls*len(plan) + statics*len(staticPlan); int(total) > want {
		t.Errorf("%d polls under a flipping load made %d requests, want at most %d (%d a poll, statics at most %d times)",
			polls, total, want, len(plan), statics)
	}
	t.Logf("%d polls: %d requests (points plan %d, statics plan %d)", polls, total, len(plan), len(staticPlan))
}

// TestSunSpecScaleStepUnderFlippingLoad: a load that flips 200 ↔ 2000 W
// starts the hold-off of the power-of-ten check; then, the load steady at
// 2000 W, W_SF of model 802 steps 0 → 1 within the hold-off. The value at
// the old scale stays in range (raw 200 read as 200 W, the battery giving
// 2000 W) and steps only once, so only the static read deferred to the
// hold-off's end sees it: the readings at the old scale end within
// ScaleJumpHoldOff, not StaticRefresh.
func TestSunSpecScaleStepUnderFlippingLoad(t *testing.T) {
	t.Parallel()
	r := newStaticsRig(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000})
	r.sim.SetLoad(2000)
	r.poll(t, 0)
	for _, load := range []float64{200, 2000} { // the first step costs a static read and starts the hold-off
		r.sim.SetLoad(load)
		r.poll(t, time.Second)
	}
	if err := r.sim.SetScaleFactor(802, "W_SF", 1); err != nil {
		t.Fatal(err)
	}
	hold := int(ScaleJumpHoldOff / time.Second)
	last := -1 // the last poll at the old scale, counted from the step
	for i := range 2 * hold {
		rd, _ := r.poll(t, time.Second)
		p, want := rd.Points["power_w"], float64(r.sim.State().BatteryW)
		if !p.Good() || math.Abs(p.Value-want) > 10 {
			last = i
		}
	}
	if last >= hold {
		t.Errorf("power_w at the old scale %d polls after W_SF stepped, want right within the %d polls of ScaleJumpHoldOff", last+1, hold)
	}
	t.Logf("readings at the old scale up to %d polls after the step", last+1)
}
