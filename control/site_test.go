package control

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/safety"
)

// plainDevice takes every command it is given, or none while down, and
// holds it until told otherwise: the device side of a site test, where
// what matters is what the controller asks of each device.
type plainDevice struct {
	name string
	mu   sync.Mutex
	down bool
	// noWrite: read as usual, but every write fails.
	noWrite bool
	got     safety.Approved
}

func (d *plainDevice) Name() string                 { return d.name }
func (d *plainDevice) RevertTimeout() time.Duration { return 60 * time.Second }
func (d *plainDevice) Apply(_ context.Context, a safety.Approved) (Readback, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down || d.noWrite {
		return Readback{}, errors.New("i/o timeout")
	}
	d.got = a
	w := a.Power()
	return Readback{HeldW: &w}, nil
}

func (d *plainDevice) holds() hearth.Watts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got.Power()
}

// siteRig is a controller over two plainDevices, with readings made from
// what each holds, a meter, and a real buffer for the events.
type siteRig struct {
	t      *testing.T
	clock  *clocktest.Clock
	b1, b2 *plainDevice
	store  *buffer.Store
	ctl    *Controller
	gridW  hearth.Watts // grid power before the batteries, positive exporting
}

// newSiteRig builds the rig; wrap, when given, makes battery2 the device
// the controller takes (one with other behaviour around its plainDevice).
func newSiteRig(t *testing.T, lim safety.Limits, wrap ...func(*plainDevice) Device) *siteRig {
	t.Helper()
	r := &siteRig{t: t, clock: clocktest.New(ctlT0), b1: &plainDevice{name: "battery1"}, b2: &plainDevice{name: "battery2"}}
	store := testStore(t, r.clock)
	r.store = store
	var d2 Device = r.b2
	for _, w := range wrap {
		d2 = w(r.b2)
	}
	var err error
	r.ctl, err = New(Options{Limits: lim, Store: store, Devices: []Device{r.b1, d2}, Event: storeEvent(store),
		MeterDevice: "meter", MeterPoint: "grid_w", Now: r.clock.Instant})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// reading is a healthy battery's reading at the power it runs: a battery
// with no cell-temperature sensor.
func (r *siteRig) reading(name string, w hearth.Watts) hearth.Reading {
	return hearth.Reading{Device: name, Time: r.clock.Now(), Points: map[string]hearth.Point{
		hearth.PointSoC.String(): hearth.V(50), hearth.PointPower.String(): hearth.V(float64(w)),
		hearth.PointCellVMin.String(): hearth.V(3.2), hearth.PointCellVMax.String(): hearth.V(3.3),
		hearth.PointTemp.String(): hearth.V(25), hearth.PointCellTempMax.String(): hearth.Q(hearth.QualityNotImplemented),
	}}
}

// lost is the reading of a poll that reached nothing.
func (r *siteRig) lost(name string) hearth.Reading {
	pts := map[string]hearth.Point{}
	for _, p := range hearth.RulePoints {
		pts[p.String()] = hearth.Q(hearth.QualityCommError)
	}
	return hearth.Reading{Device: name, Time: r.clock.Now(), Points: pts}
}

// cycle is one poll of both batteries and the meter, and a step.
func (r *siteRig) cycle() {
	r.clock.Advance(time.Second)
	for _, d := range []*plainDevice{r.b1, r.b2} {
		d.mu.Lock()
		down := d.down
		d.mu.Unlock()
		if down {
			r.ctl.Observe(r.lost(d.name))
		} else {
			r.ctl.Observe(r.reading(d.name, d.holds()))
		}
	}
	grid := r.gridW + r.b1.holds() + r.b2.holds()
	r.ctl.Observe(hearth.Reading{Device: "meter", Time: r.clock.Now(), Points: map[string]hearth.Point{"grid_w": hearth.V(float64(grid))}})
	r.ctl.Step(context.Background())
}

func (r *siteRig) events(typ hearth.EventType) []map[string]any {
	r.t.Helper()
	return (&ctlRig{t: r.t, store: r.store}).events(typ)
}

// A lost link is one device_down on that device: no trip per rule (none
// for a cell temperature the battery has no sensor for), no trip at all
// in the events (the poller reports device_down); the state says which
// device is down; a lease acked meanwhile says the site is partial; and
// trips name their device.
func TestLostLinkIsReportedForItsDevice(t *testing.T) {
	t.Parallel()
	r := newSiteRig(t, testSafetyLimits())
	for range 3 {
		r.cycle()
	}
	r.b2.mu.Lock()
	r.b2.down = true
	r.b2.mu.Unlock()
	for range 3 {
		r.cycle()
	}
	st := r.ctl.State()
	if got := st.Devices["battery2"]; got.Safety != string(hearth.RuleDeviceDown) {
		t.Errorf("state devices %+v, want battery2 device_down", st.Devices)
	}
	if got := st.Devices["battery1"]; got.Safety != "ok" {
		t.Errorf("state devices %+v, want battery1 ok", st.Devices)
	}
	ack := r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 1000), r.clock.Instant())
	if ack.Excluded["battery2"] != string(hearth.RuleDeviceDown) || len(ack.Excluded) != 1 {
		t.Errorf("ack %+v, want battery2 excluded as device_down", ack)
	}
	r.b2.mu.Lock()
	r.b2.down = false
	r.b2.mu.Unlock()
	for range 3 {
		r.cycle()
	}
	if evs := append(r.events(hearth.EventTrip), r.events(hearth.EventTripCleared)...); len(evs) != 0 {
		t.Errorf("a lost link gave trip events %v, want none", evs)
	}
	if st := r.ctl.State(); st.Safety != "ok" || st.Devices["battery2"].Safety != "ok" {
		t.Errorf("battery2 back: state %+v, want ok", st)
	}

	// A trip names its device, and so does its clear.
	hot := r.reading(r.b2.name, r.b2.holds())
	hot.Points[hearth.PointTemp.String()] = hearth.V(60)
	r.clock.Advance(time.Second)
	r.ctl.Observe(hot)
	r.ctl.Step(context.Background())
	r.cycle()
	trips, clears := r.events(hearth.EventTrip), r.events(hearth.EventTripCleared)
	if len(trips) != 1 || trips[0]["device"] != "battery2" || trips[0]["rule"] != string(hearth.RuleTempMax) {
		t.Errorf("trips %v, want one temp_c_max on battery2", trips)
	}
	if len(clears) != 1 || clears[0]["device"] != "battery2" {
		t.Errorf("clears %v, want one on battery2", clears)
	}
}

// Two batteries under site_max_discharge_w 3000: when battery2's link
// drops while it holds 1500 W, battery1 stays at 1500 W until battery2's
// revert timer lapses, instead of taking battery2's share (4000 W at the
// site).
func TestSiteCapHoldsWhenADeviceDrops(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.SiteMaxDischargeW = new(hearth.Watts(3000))
	r := newSiteRig(t, lim)
	r.cycle()
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 5000), r.clock.Instant())
	for range 5 {
		r.cycle()
	}
	if r.b1.holds() != 1500 || r.b2.holds() != 1500 {
		t.Fatalf("holding %v and %v W, want 1500 W each", r.b1.holds(), r.b2.holds())
	}
	r.b2.mu.Lock()
	r.b2.down = true
	r.b2.mu.Unlock()
	for range 10 {
		r.cycle()
		if site := r.b1.holds() + r.b2.holds(); site > 3000 {
			t.Fatalf("battery2 down holding 1500 W: battery1 at %v W, site %v W over its cap of 3000 W", r.b1.holds(), site)
		}
	}
	r.clock.Advance(time.Minute) // battery2's revert timer lapses: it is back on its own logic
	for range 3 {
		r.cycle()
	}
	if r.b1.holds() != 2500 {
		t.Errorf("battery2's command lapsed: battery1 at %v W, want 2500 W (its own limit)", r.b1.holds())
	}
}

// lateLapse is a device whose command is seen to outlast its timeout
// setting: refreshed every RevertTimeout/3, it may run its last command
// for 90 s.
type lateLapse struct{ *plainDevice }

func (lateLapse) HoldsUpTo() time.Duration { return 90 * time.Second }

// A device whose command may outlast its timeout (HoldsUpTo) is counted
// at its last command for that long when its link drops, not for its
// RevertTimeout: battery1 takes battery2's share only once battery2 can
// no longer run it.
func TestSiteCapHoldsWhileADeviceMayStillRun(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.SiteMaxDischargeW = new(hearth.Watts(3000))
	r := newSiteRig(t, lim, func(d *plainDevice) Device { return lateLapse{d} })
	r.cycle()
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 5000), r.clock.Instant())
	for range 5 {
		r.cycle()
	}
	r.b2.mu.Lock()
	r.b2.down = true
	r.b2.mu.Unlock()
	for s := range 80 { // past the 60 s RevertTimeout, within the 90 s it may run
		r.cycle()
		if r.b1.holds() > 1500 {
			t.Fatalf("battery2 down, its command may run 90 s: battery1 given %v W after %d s, the site over its cap of 3000 W", r.b1.holds(), s+1)
		}
	}
	r.clock.Advance(15 * time.Second)
	for range 3 {
		r.cycle()
	}
	if r.b1.holds() != 2500 {
		t.Errorf("battery2's command can no longer run: battery1 at %v W, want 2500 W (its own limit)", r.b1.holds())
	}
}

// A change during a lease that makes a site cap or the import limit bind
// is a clamped event, with the rule's limit, once per binding.
func TestSiteLimitBindingMidLeaseIsAClamp(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.ImportLimitW = new(hearth.Watts(3000))
	r := newSiteRig(t, lim)
	r.gridW = -500 // the house imports 500 W
	r.cycle()
	r.cycle() // the meter has seen the site's command
	if ack := r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, -2000), r.clock.Instant()); ack.Result != hearth.ResultApplied {
		t.Fatalf("ack %+v, want applied", ack)
	}
	for range 5 {
		r.cycle()
	}
	if n := len(r.events(hearth.EventClamped)); n != 0 {
		t.Fatalf("%d clamps before anything binds", n)
	}
	// One meter sample over the limit (read while a battery moved, say),
	// the next one under it: that is no binding to report.
	r.gridW = -2000
	r.cycle()
	r.gridW = -500
	for range 3 {
		r.cycle()
	}
	if cl := r.events(hearth.EventClamped); len(cl) != 0 {
		t.Fatalf("one meter sample over import_limit_w gave clamps %v, want none", cl)
	}
	r.gridW = -2000 // the house now imports 2000 W: 4000 W with the batteries, over 3000 W
	for range 8 {
		r.cycle()
	}
	cl := r.events(hearth.EventClamped)
	if len(cl) != 1 || cl[0]["rule"] != string(hearth.RuleImport) || cl[0]["limit_w"] != 3000.0 {
		t.Fatalf("clamps %v, want one by import_limit_w with limit_w 3000", cl)
	}
	if got := r.b1.holds() + r.b2.holds(); got < -1000-1 || got > -1000+1 {
		t.Errorf("charging %v W, want 1000 W (import 3000 W with 2000 W of house)", -got)
	}
}

// tickerClock is a manual clock that reports the tickers asked of it.
type tickerClock struct {
	hearth.Clock
	periods chan time.Duration
}

func (c tickerClock) NewTicker(d time.Duration) hearth.Ticker {
	c.periods <- d
	return c.Clock.NewTicker(d)
}

// The loop's tick comes from the injected clock: moving that clock alone
// ends a lease, with no reading and no real time passing for it.
func TestLoopTicksOnTheInjectedClock(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(ctlT0)
	tc := tickerClock{Clock: clk.Hearth(), periods: make(chan time.Duration, 1)}
	store := testStore(t, clk)
	dev := &plainDevice{name: "battery1"}
	ctl, err := New(Options{Limits: testSafetyLimits(), Store: store, Devices: []Device{dev}, Event: storeEvent(store), Clock: tc})
	if err != nil {
		t.Fatal(err)
	}
	if ack := ctl.Submit(lease(1, clk.Now(), 10*time.Second, hearth.ModeIdle, 0), clk.Instant()); ack.Result != hearth.ResultApplied {
		t.Fatalf("ack %+v", ack)
	}
	ctl.Start()
	t.Cleanup(ctl.Close)
	select {
	case p := <-tc.periods:
		if p != time.Second {
			t.Errorf("ticker of %s, want 1 s (a sixth of a 60 s revert timer, at most 1 s)", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the loop asked the injected clock for no ticker")
	}
	r := &ctlRig{t: t, store: store}
	for range 400 {
		clk.Advance(100 * time.Millisecond)
		if len(r.events(hearth.EventLeaseEnded)) > 0 {
			return
		}
		time.Sleep(time.Millisecond) // let the loop take the tick
	}
	t.Fatalf("40 s on the injected clock past a 10 s lease: no lease_ended")
}

// At start the devices' first readings arrive one by one: a device not
// yet read holds the safe state quietly, with no max_reading_age trip
// and clear for the moments before its first reading.
func TestDeviceNotYetReadIsNoTrip(t *testing.T) {
	t.Parallel()
	r := newSiteRig(t, testSafetyLimits())
	r.clock.Advance(time.Second)
	r.ctl.Observe(r.reading(r.b2.name, r.b2.holds()))
	r.ctl.Step(context.Background())
	if got := r.b1.holds(); got != 0 {
		t.Errorf("battery1 not yet read holds %v W, want the safe state", got)
	}
	r.cycle()
	r.cycle()
	if evs := append(r.events(hearth.EventTrip), r.events(hearth.EventTripCleared)...); len(evs) != 0 {
		t.Errorf("the first readings coming one by one gave trip events %v, want none", evs)
	}
	if st := r.ctl.State(); st.Safety != "ok" || st.Devices["battery1"].Safety != "ok" {
		t.Errorf("both batteries read: state %+v, want ok", st)
	}
}

// The state says what the events say. At start, before a device's first
// reading, the device is held safe quietly: no trip event, and no
// max_reading_age in the state either (site or device) until a reading of
// it is judged. A device read and then silent past max_reading_age trips
// it in both.
func TestStateAgreesWithEventsBeforeTheFirstReading(t *testing.T) {
	t.Parallel()
	r := newSiteRig(t, testSafetyLimits())
	stale := string(hearth.RuleStale)
	r.clock.Advance(time.Second)
	r.ctl.Step(context.Background())
	if st := r.ctl.State(); st.Safety != "ok" || slices.Contains(st.Trips, stale) || len(st.Devices) != 0 {
		t.Errorf("before any reading: state safety %q trips %v devices %+v; want ok, no trip, no device judged", st.Safety, st.Trips, st.Devices)
	}
	r.clock.Advance(time.Second)
	r.ctl.Observe(r.reading(r.b2.name, r.b2.holds()))
	r.ctl.Step(context.Background())
	st := r.ctl.State()
	if _, judged := st.Devices["battery1"]; st.Safety != "ok" || slices.Contains(st.Trips, stale) || judged || st.Devices["battery2"].Safety != "ok" {
		t.Errorf("battery2 read, battery1 not yet: state safety %q trips %v devices %+v; want ok, battery2 ok, battery1 not judged", st.Safety, st.Trips, st.Devices)
	}
	if evs := r.events(hearth.EventTrip); len(evs) != 0 {
		t.Errorf("before battery1's first reading: trip events %v, want none", evs)
	}

	// Both read; then battery1 falls silent for longer than max_reading_age.
	r.cycle()
	for range 12 {
		r.clock.Advance(time.Second)
		r.ctl.Observe(r.reading(r.b2.name, r.b2.holds()))
		r.ctl.Step(context.Background())
	}
	st = r.ctl.State()
	evs := r.events(hearth.EventTrip)
	if st.Safety != stale || !slices.Equal(st.Devices["battery1"].Trips, []string{stale}) {
		t.Errorf("battery1 silent 12 s: state safety %q devices %+v; want %s on battery1", st.Safety, st.Devices, stale)
	}
	if len(evs) != 1 || evs[0]["rule"] != stale || evs[0]["device"] != "battery1" {
		t.Errorf("battery1 silent 12 s: trip events %v; want one %s on battery1", evs, stale)
	}
}

// vendorBattery is a device commanded through its profile's control
// section, as the agent hands it to the controller.
type vendorBattery struct{ *drivers.VendorDevice }

func (d vendorBattery) Apply(ctx context.Context, a safety.Approved) (Readback, error) {
	st, err := d.VendorDevice.Apply(ctx, a)
	rb := Readback{Detail: st}
	if a.Mode() == hearth.ModePower && (err == nil || errors.Is(err, hearth.ErrNotEffective)) {
		held := hearth.Watts(st.HeldW)
		rb.HeldW = &held
	}
	return rb, err
}

// Two batteries under site_max_discharge_w 3000, battery2 a Huawei on its
// simulator with a forcible period of 90s, which the device counts in
// whole minutes: it runs a command for 2 minutes after the last write.
// When battery2's link drops while it discharges 1500 W, battery1 may not
// take battery2's share until battery2 has really dropped the command:
// the controller counts it at 1500 W for RevertTimeout, so RevertTimeout
// must be the 2 minutes the device runs, not the 90 s the profile says.
func TestSiteCapHoldsForTheTimeoutTheDeviceRuns(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(ctlT0)
	v, addr, cut := harness.StartVendorSim(t, sim.VendorConfig{Profile: "huawei_sun2000", Now: clock.Now})
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: addr, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	base, err := drivers.EmbeddedProfile("huawei_sun2000")
	if err != nil {
		t.Fatal(err)
	}
	p, ctl := *base, *base.Control
	ctl.Timeout.Value = drivers.Duration(90 * time.Second)
	p.Control = &ctl
	b2 := vendorBattery{drivers.NewVendorDevice("battery2", bus, v.Unit(), &p, clock.Now)}
	newVendorSite(t, clock, v, cut, b2, 0).holdsTheCapThroughADrop(200)
}

// testStore opens a buffer on clock for a controller's events.
func testStore(t *testing.T, clock *clocktest.Clock) *buffer.Store {
	t.Helper()
	store, err := buffer.Open(t.TempDir()+"/hearth.db", buffer.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// vendorSite is battery1, a plainDevice, and battery2, a vendor device on
// its simulator, under one controller with a meter and a site cap of
// 3000 W discharging.
type vendorSite struct {
	*siteRig
	b1     *plainDevice
	v      *sim.Vendor
	cut    func() // battery2's link drops; the device runs on
	down   bool
	start  time.Time
	tick   int
	houseW hearth.Watts // house load, drawn from the grid
}

func newVendorSite(t *testing.T, clock *clocktest.Clock, v *sim.Vendor, cut func(), b2 Device, houseW hearth.Watts) *vendorSite {
	t.Helper()
	store := testStore(t, clock)
	lim := testSafetyLimits()
	lim.SiteMaxDischargeW = new(hearth.Watts(3000))
	b1 := &plainDevice{name: "battery1"}
	c, err := New(Options{Limits: lim, Store: store, Devices: []Device{b1, b2}, Event: storeEvent(store),
		MeterDevice: "meter", MeterPoint: "grid_w", Now: clock.Instant})
	if err != nil {
		t.Fatal(err)
	}
	return &vendorSite{siteRig: &siteRig{t: t, clock: clock, store: store, ctl: c}, b1: b1, v: v, cut: cut, start: clock.Now(), houseW: houseW}
}

// cycle is one poll of both batteries and the meter, and a step, a
// second after the last: counted from the start, as writes that take
// time on the device's line move the clock within a step.
func (r *vendorSite) cycle() {
	r.tick++
	r.clock.Advance(r.start.Add(time.Duration(r.tick) * time.Second).Sub(r.clock.Now()))
	r.ctl.Observe(r.reading(r.b1.name, r.b1.holds()))
	if r.down {
		r.ctl.Observe(r.lost("battery2"))
	} else {
		r.ctl.Observe(r.reading("battery2", r.v.State().BatteryW))
	}
	grid := r.houseW + r.b1.holds() + r.v.State().BatteryW
	r.ctl.Observe(hearth.Reading{Device: "meter", Time: r.clock.Now(), Points: map[string]hearth.Point{"grid_w": hearth.V(float64(grid))}})
	r.ctl.Step(context.Background())
}

// holdsTheCapThroughADrop runs both batteries at 1500 W, then drops
// battery2's link: while battery2 still runs its command (up to maxS
// seconds), battery1 may not take its share; once it has dropped it,
// battery1 runs its own limit, 2500 W.
func (r *vendorSite) holdsTheCapThroughADrop(maxS int) {
	t := r.t
	t.Helper()
	r.cycle()
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 5000), r.clock.Instant())
	for range 5 {
		r.cycle()
	}
	if r.b1.holds() != 1500 || r.v.State().BatteryW != 1500 {
		t.Fatalf("running %v and %v W, want 1500 W each", r.b1.holds(), r.v.State().BatteryW)
	}
	r.cut()
	r.down = true
	for s := 1; r.v.State().Forced; s++ {
		r.cycle()
		if site := r.b1.holds() + r.v.State().BatteryW; site > 3000 {
			t.Fatalf("%d s after battery2's link dropped it still runs %v W, and battery1 was given %v W: the site runs %v W, over its cap of 3000 W", s, r.v.State().BatteryW, r.b1.holds(), site)
		}
		if s > maxS {
			t.Fatal("battery2 never dropped its command")
		}
	}
	for range 5 {
		r.cycle()
	}
	if r.b1.holds() != 2500 {
		t.Errorf("battery2 dropped its command: battery1 at %v W, want 2500 W (its own limit)", r.b1.holds())
	}
}

// windowSiteRig is battery1, a plainDevice, and battery2, a Fronius GEN24
// on its simulator, under one controller with a meter: the simulator's
// model 124 is a power window whose discharge reference (WDisChaRteMax
// 7 kW) differs from its charge reference (WChaMax 6 kW), and battery2 is
// wired as the agent wires a window device.
type windowSiteRig struct {
	*siteRig
	sim  *sim.Simulator
	b1   *plainDevice
	down bool // battery2's link is down: its polls reach nothing
}

func newWindowSiteRig(t *testing.T, lim safety.Limits) *windowSiteRig {
	t.Helper()
	clock := clocktest.New(ctlT0)
	s, addr := harness.StartSim(t, sim.Config{MaxChargeW: 6000, MaxDischargeW: 7000, InitialSoC: 60,
		PowerWindow: true, DischargeReference: true, Now: clock.Now})
	s.SetPV(0)
	s.SetLoad(500)
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: addr, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	p, err := drivers.EmbeddedProfile("fronius_gen24")
	if err != nil {
		t.Fatal(err)
	}
	b2 := storageDevice{drivers.NewStorage(drivers.NewSunSpecDevice("battery2", bus, 1, drivers.WithProfile(p)), time.Minute,
		drivers.WriteBudget(p.Model124Writes(), clock.Now), drivers.PowerWindow())}
	store := testStore(t, clock)
	b1 := &plainDevice{name: "battery1"}
	c, err := New(Options{Limits: lim, Store: store, Devices: []Device{b1, b2}, Event: storeEvent(store),
		MeterDevice: "meter", MeterPoint: "grid_w", Now: clock.Instant})
	if err != nil {
		t.Fatal(err)
	}
	return &windowSiteRig{siteRig: &siteRig{t: t, clock: clock, store: store, ctl: c}, sim: s, b1: b1}
}

// cycle is one poll of both batteries and the meter, and a step.
func (r *windowSiteRig) cycle() {
	r.clock.Advance(time.Second)
	r.ctl.Observe(r.reading(r.b1.name, r.b1.holds()))
	if r.down {
		r.ctl.Observe(r.lost("battery2"))
	} else {
		r.ctl.Observe(r.reading("battery2", r.sim.State().BatteryW))
	}
	grid := r.b1.holds() + r.sim.State().BatteryW
	r.ctl.Observe(hearth.Reading{Device: "meter", Time: r.clock.Now(), Points: map[string]hearth.Point{"grid_w": hearth.V(float64(grid))}})
	r.ctl.Step(context.Background())
}

// Two batteries under site_max_discharge_w 3000, battery2 a window device
// (windowSiteRig) whose 1500 W command is OutWRte 21.42 % of 7 kW
// (1499.4 W) and InWRte −25 % of 6 kW (1500 W), and which runs 1500 W.
// When its link drops, the controller counts it at the power its read-back
// holds until its revert timer lapses, so that power must be what it runs:
// read as 0 W (a window whose bounds differ taken for the device's own
// logic), battery1 was given battery2's share and the site ran 4000 W.
func TestSiteCapCountsAWindowDeviceAtItsCommand(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.SiteMaxDischargeW = new(hearth.Watts(3000))
	lim.RampWPerS = 10000 // each battery at its share in one step (the ramp has a test of its own)
	r := newWindowSiteRig(t, lim)
	r.cycle()
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 5000), r.clock.Instant())
	for range 5 {
		r.cycle()
	}
	if r.b1.holds() != 1500 || r.sim.State().BatteryW != 1500 {
		t.Fatalf("running %v and %v W, want 1500 W each", r.b1.holds(), r.sim.State().BatteryW)
	}
	r.sim.SetFault(sim.Fault{Drop: true}) // battery2's link drops; the device runs on
	r.down = true
	for n := 1; !r.sim.State().Reverted; n++ {
		r.cycle()
		if site := r.b1.holds() + r.sim.State().BatteryW; site > 3000 {
			t.Fatalf("%d s after battery2's link dropped it still runs %v W, and battery1 was given %v W: the site runs %v W, over its cap of 3000 W",
				n, r.sim.State().BatteryW, r.b1.holds(), site)
		}
		if n > 200 {
			t.Fatal("battery2 never dropped its command")
		}
	}
	for range 5 {
		r.cycle()
	}
	if r.b1.holds() != 2500 {
		t.Errorf("battery2 dropped its command: battery1 at %v W, want 2500 W (its own limit)", r.b1.holds())
	}
}

// The ramp starts each step from what a device holds by its read-back:
// a window device (windowSiteRig) whose read-back was taken for 0 W was
// ramped from 0 W at every step and never got past the first step
// (999.6 W of a 1500 W share, at 1000 W/s).
func TestWindowDeviceRampsFromWhatItRuns(t *testing.T) {
	t.Parallel()
	lim := testSafetyLimits()
	lim.SiteMaxDischargeW = new(hearth.Watts(3000))
	r := newWindowSiteRig(t, lim)
	r.cycle()
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 5000), r.clock.Instant())
	for range 5 {
		r.cycle()
	}
	if b1, b2 := r.b1.holds(), r.sim.State().BatteryW; b1 != 1500 || b2 != 1500 {
		t.Fatalf("5 s into the lease at 1000 W/s: running %v and %v W, want 1500 W each", b1, b2)
	}
	if got := r.ctl.State().AppliedW; got == nil || *got != 3000 {
		t.Errorf("applied_w %v, want 3000 W", got)
	}
}
