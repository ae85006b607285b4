package control

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/safety"
)

// ctlRig is a controller driving a simulator over loopback Modbus TCP, with
// a real SQLite buffer and one clock for both.
type ctlRig struct {
	t      *testing.T
	clock  *clocktest.Clock
	sim    *sim.Simulator
	dev    *drivers.SunSpecDevice
	st     *drivers.Storage
	store  *buffer.Store
	dbPath string
	ctl    *Controller
	synced bool
	build  time.Time // the build time the controller is given
	// simCfg, when set before init, configures the simulator; wrap puts
	// something between the controller and the device.
	simCfg *sim.Config
	wrap   func(Device) Device
}

func testSafetyLimits() safety.Limits {
	return safety.Limits{
		SoCMinPct: 10, SoCMaxPct: 95, SoCHysteresisPct: 2,
		MaxChargeW: 2500, MaxDischargeW: 2500, RampWPerS: 1000,
		MaxReadingAge: 10 * time.Second,
		CellVMin:      2.8, CellVMax: 3.65, CellVHysteresis: 0.05,
		TempCMin: 0, TempCMax: 50, TempHysteresisC: 2,
		MaxLease: 24 * time.Hour, ClockSkew: 30 * time.Second, Fallback: hearth.ModeAuto,
	}
}

var ctlT0 = time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC) // night: no PV

func newCtlRig(t *testing.T) *ctlRig {
	t.Helper()
	r := &ctlRig{t: t, clock: clocktest.New(ctlT0), synced: true}
	r.init()
	return r
}

// init starts the simulator and the controller. The simulator keeps time
// of its own, as a device does: from ctlT0 on the rig's monotonic clock,
// so stepping the gateway's wall clock does not move it.
func (r *ctlRig) init() {
	t := r.t
	t.Helper()
	start := r.clock.Instant().Mono
	cfg := sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000}
	if r.simCfg != nil {
		cfg = *r.simCfg
	}
	cfg.Now = func() time.Time { return ctlT0.Add(r.clock.Instant().Mono - start) }
	r.sim = sim.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.sim.ServeTCP(ctx, ln) }()
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: ln.Addr().String(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.dev = drivers.NewSunSpecDevice("battery", bus, 1)
	r.st = drivers.NewStorage(r.dev, 30*time.Second)
	r.dbPath = filepath.Join(t.TempDir(), "hearth.db")
	t.Cleanup(func() {
		if r.store != nil {
			r.store.Close()
		}
		bus.Close()
		cancel()
		<-done
	})
	r.restart()
}

// restart closes the buffer and builds a fresh controller on the same
// database, as a restarted agent does.
func (r *ctlRig) restart() {
	r.t.Helper()
	if r.store != nil {
		r.store.Close()
	}
	store, err := buffer.Open(r.dbPath, buffer.Options{Now: r.clock.Now})
	if err != nil {
		r.t.Fatal(err)
	}
	r.store = store
	var dev Device = storageDevice{r.st}
	if r.wrap != nil {
		dev = r.wrap(dev)
	}
	ctl, err := New(Options{
		Limits: testSafetyLimits(), Store: store, Devices: []Device{dev}, Event: storeEvent(store),
		Now: r.clock.Instant, Synced: func() bool { return r.synced }, EffectiveWithin: 5 * time.Second, BuildTime: r.build,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.ctl = ctl
}

// storageDevice is a SunSpec device's storage controls as the controller
// sees them, as the agent wires them.
type storageDevice struct{ *drivers.Storage }

func (d storageDevice) Apply(ctx context.Context, a safety.Approved) (Readback, error) {
	st, err := d.Storage.Apply(ctx, a)
	rb := Readback{Detail: st}
	if err == nil || errors.Is(err, hearth.ErrNotEffective) {
		held := hearth.Watts(st.HeldW)
		rb.HeldW = &held
	}
	return rb, err
}

// storeEvent records events in the buffer's outbox, as the agent does.
func storeEvent(store *buffer.Store) func(string, map[string]any) {
	return func(typ string, data map[string]any) {
		b, err := json.Marshal(data)
		if err == nil {
			_, err = store.AppendEvent(hearth.Event{Type: typ, Data: b})
		}
		if err != nil {
			panic(err)
		}
	}
}

// cycle is one poll cycle: the clock moves, the device is read, and the
// controller steps.
func (r *ctlRig) cycle(d time.Duration) {
	r.t.Helper()
	r.clock.Advance(d)
	rd, err := r.dev.Poll(context.Background(), r.clock.Now)
	if err != nil {
		r.t.Fatalf("poll: %v", err)
	}
	r.ctl.Observe(rd)
	r.ctl.Step(context.Background())
}

func (r *ctlRig) events(typ hearth.EventType) []map[string]any {
	r.t.Helper()
	evs, err := r.store.PendingEvents(1000)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []map[string]any
	for _, e := range evs {
		if e.Type == string(typ) {
			var m map[string]any
			if err := json.Unmarshal(e.Data, &m); err != nil {
				r.t.Fatal(err)
			}
			out = append(out, m)
		}
	}
	return out
}

func lease(version uint64, now time.Time, d time.Duration, mode hearth.Mode, w float64) hearth.Setpoint {
	p := hearth.Watts(w)
	return hearth.Setpoint{ID: "sp" + time.Duration(version).String(), Version: version, IssuedAt: now, ValidUntil: now.Add(d),
		Mode: mode, PowerW: &p, Fallback: hearth.ModeAuto}
}

func TestSubmitClampsAndWritesWithinLimits(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	ack := r.ctl.Submit(lease(1, r.clock.Now(), 15*time.Minute, hearth.ModePower, 5000), r.clock.Instant())
	if ack.Result != hearth.ResultClamped || ack.Reason != hearth.RuleReason(hearth.RuleMaxDischarge) || ack.AppliedW == nil || *ack.AppliedW != 2500 {
		t.Fatalf("ack %+v, want clamped by %s to 2500 W", ack, hearth.RuleMaxDischarge)
	}
	for range 6 {
		r.cycle(time.Second)
	}
	if s := r.sim.State(); s.BatteryW != 2500 {
		t.Errorf("simulator at %v W after ramping, want 2500 W", s.BatteryW)
	}
	outAddr, _ := r.sim.PointAddr(124, "OutWRte")
	for _, w := range r.sim.Writes() {
		if w.Addr == outAddr && int16(w.Values[0]) > 5000 { // 50 % of WChaMax 5000 W
			t.Errorf("wrote OutWRte %d (>50 %% of 5000 W) at %s", int16(w.Values[0]), w.Time)
		}
	}
	if len(r.events(hearth.EventClamped)) == 0 || len(r.events(hearth.EventLeaseStarted)) != 1 {
		t.Errorf("events: clamped %v, lease_started %v", r.events(hearth.EventClamped), r.events(hearth.EventLeaseStarted))
	}
	st := r.ctl.State()
	if st.Lease == nil || st.Lease.Version != 1 || st.Mode != hearth.ModePower || st.AppliedW == nil || *st.AppliedW != 2500 {
		t.Errorf("state %+v", st)
	}

	for _, c := range []struct {
		v    uint64
		want hearth.Result
	}{{1, hearth.ResultDuplicate}, {0, hearth.ResultStale}} {
		if got := r.ctl.Submit(lease(c.v, r.clock.Now(), time.Minute, hearth.ModeIdle, 0), r.clock.Instant()); got.Result != c.want {
			t.Errorf("version %d after 1: %s, want %s", c.v, got.Result, c.want)
		}
	}
	if got := r.ctl.Submit(lease(2, r.clock.Now().Add(-time.Hour), time.Minute, hearth.ModeIdle, 0), r.clock.Instant()); got.Result != hearth.ResultExpired {
		t.Errorf("expired lease: %+v", got)
	}
	if n := len(r.events(hearth.EventSetpointRejected)); n != 2 {
		t.Errorf("%d setpoint_rejected events, want 2 (stale and expired; a duplicate is a no-op)", n)
	}
}

func TestSoCThroughMinStopsDischargeAtNextPoll(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 2000), r.clock.Instant())
	for range 4 {
		r.cycle(time.Second)
	}
	if s := r.sim.State(); s.BatteryW != 2000 {
		t.Fatalf("discharging at %v W, want 2000", s.BatteryW)
	}
	r.sim.SetSoC(9.5)
	r.cycle(time.Second)
	if s := r.sim.State(); s.BatteryW > 0 {
		t.Fatalf("one poll after SoC fell to 9.5 %%: discharging %v W, want none", s.BatteryW)
	}
	if st := r.ctl.State(); st.Safety != string(hearth.RuleSoCMin) {
		t.Errorf("state safety %q, want %s", st.Safety, hearth.RuleSoCMin)
	}
	if len(r.events(hearth.EventTrip)) != 1 {
		t.Errorf("trip events %v", r.events(hearth.EventTrip))
	}
}

func TestLeaseExpiryTakesFallback(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	sp := lease(1, r.clock.Now(), 10*time.Second, hearth.ModePower, -1000)
	sp.Fallback = hearth.ModeIdle
	r.ctl.Submit(sp, r.clock.Instant())
	for range 5 {
		r.cycle(time.Second)
	}
	if s := r.sim.State(); s.BatteryW != -1000 {
		t.Fatalf("charging at %v W, want -1000", s.BatteryW)
	}
	for range 6 {
		r.cycle(time.Second)
	}
	if s := r.sim.State(); s.BatteryW != 0 || s.Mode != sim.ModeNet {
		t.Errorf("after expiry: %v W in %s, want idle (0 W held)", s.BatteryW, s.Mode)
	}
	ended := r.events(hearth.EventLeaseEnded)
	if len(ended) != 1 || ended[0]["fallback"] != "idle" || ended[0]["reason"] != "expired" {
		t.Errorf("lease_ended events %v, want one with fallback idle", ended)
	}
	if st := r.ctl.State(); st.Lease != nil || st.Mode != hearth.ModeIdle {
		t.Errorf("state %+v", st)
	}
}

func TestRestartResumesUnexpiredLeaseOnly(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	r.ctl.Submit(lease(7, r.clock.Now(), time.Minute, hearth.ModePower, 1500), r.clock.Instant())
	r.cycle(time.Second)

	r.restart()
	l, ok := r.ctl.Lease()
	if !ok || l.Setpoint.Version != 7 {
		t.Fatalf("restarted controller has lease %+v %v, want version 7", l, ok)
	}
	if got := r.ctl.Submit(lease(7, r.clock.Now(), time.Minute, hearth.ModePower, 1500), r.clock.Instant()); got.Result != hearth.ResultDuplicate {
		t.Errorf("replayed version 7 after restart: %s, want duplicate", got.Result)
	}
	for range 3 {
		r.cycle(time.Second)
	}
	if s := r.sim.State(); s.BatteryW != 1500 {
		t.Errorf("resumed lease: %v W, want 1500", s.BatteryW)
	}

	// Down for longer than the lease: it must not come back.
	r.clock.Advance(2 * time.Minute)
	r.restart()
	if _, ok := r.ctl.Lease(); ok {
		t.Fatal("an expired lease was resumed")
	}
	before := len(r.sim.Writes())
	r.cycle(time.Second)
	for _, w := range r.sim.Writes()[before:] {
		if a, _ := r.sim.PointAddr(124, "StorCtl_Mod"); w.Addr == a && w.Values[0] != 0 {
			t.Errorf("after restart past expiry wrote StorCtl_Mod %d, want only auto (0)", w.Values[0])
		}
	}
	if s := r.sim.State(); s.Mode != sim.ModeSelfConsumption {
		t.Errorf("simulator in %s, want handed back (self-consumption)", s.Mode)
	}
	if got := r.ctl.Submit(lease(6, r.clock.Now(), time.Minute, hearth.ModeIdle, 0), r.clock.Instant()); got.Result != hearth.ResultStale {
		t.Errorf("version 6 after 7 across restarts: %s, want stale", got.Result)
	}
}

func TestUnsyncedLeaseRunsOnMonotonicTimeAndIsNotResumed(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.synced = false
	r.cycle(time.Second)
	// Issued by a cloud in 2026; this gateway's clock is far off.
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ack := r.ctl.Submit(lease(1, issued, 20*time.Second, hearth.ModePower, 1000), r.clock.Instant())
	if ack.Result != hearth.ResultApplied {
		t.Fatalf("ack %+v, want applied", ack)
	}
	r.cycle(19 * time.Second)
	if _, ok := r.ctl.Lease(); !ok {
		t.Fatal("lease ended before its length passed")
	}
	r.restart()
	if _, ok := r.ctl.Lease(); ok {
		t.Fatal("a lease received on an unsynced clock was resumed after restart")
	}
}

func TestLocalOverrideTakesPrecedence(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 2000), r.clock.Instant())
	if _, err := r.ctl.Override(hearth.ModeIdle, nil, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ctl.Override(hearth.ModeSelfConsumption, nil, time.Minute); err == nil {
		t.Error("a local power override was accepted")
	}
	var states []hearth.State
	r.ctl.OnState(func(s hearth.State) { states = append(states, s) })
	for range 3 {
		r.cycle(time.Second)
	}
	if s := r.sim.State(); s.BatteryW != 0 {
		t.Errorf("override idle: %v W", s.BatteryW)
	}
	if st := r.ctl.State(); st.Lease == nil || st.Lease.Source != safety.SourceLocal {
		t.Errorf("state lease %+v, want the local one", st.Lease)
	}
	r.clock.Advance(30 * time.Second)
	for range 3 {
		r.cycle(time.Second)
	}
	if st := r.ctl.State(); st.Lease == nil || st.Lease.Source != safety.SourceCloud {
		t.Errorf("after the override: lease %+v, want the cloud one back", st.Lease)
	}
	if len(states) < 2 {
		t.Errorf("state callbacks %d, want at least the change to the override and back", len(states))
	}
}

func TestEStopHoldsZeroAndRejects(t *testing.T) {
	t.Parallel()
	r := newCtlRig(t)
	r.cycle(time.Second)
	r.ctl.Submit(lease(1, r.clock.Now(), time.Hour, hearth.ModePower, 2000), r.clock.Instant())
	for range 3 {
		r.cycle(time.Second)
	}
	r.ctl.SetEStop(true)
	r.ctl.Step(context.Background())
	if s := r.sim.State(); s.BatteryW != 0 {
		t.Errorf("e-stop: %v W, want 0", s.BatteryW)
	}
	if ack := r.ctl.Submit(lease(2, r.clock.Now(), time.Hour, hearth.ModePower, 100), r.clock.Instant()); ack.Result != hearth.ResultRejected || ack.Reason != hearth.RuleReason(hearth.RuleEStop) {
		t.Errorf("setpoint during e-stop: %+v", ack)
	}
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, "p99_ms")
}

// BenchmarkReactionLimitCrossing measures, over loopback Modbus TCP, the
// time from a reading that crosses soc_min_pct reaching the controller to
// the corrective write being read back.
func BenchmarkReactionLimitCrossing(b *testing.B) {
	t := &testing.T{}
	r := newCtlRig(t)
	defer func() {
		if r.store != nil {
			r.store.Close()
		}
	}()
	ctx := context.Background()
	r.ctl.Submit(lease(1, r.clock.Now(), 24*time.Hour, hearth.ModePower, 2000), r.clock.Instant())
	poll := func() hearth.Reading {
		rd, err := r.dev.Poll(ctx, r.clock.Now)
		if err != nil {
			b.Fatal(err)
		}
		return rd
	}
	high := poll()
	r.sim.SetSoC(9)
	low := poll()
	r.ctl.Observe(high)
	r.ctl.Step(ctx) // starts the ramp from 0 W
	var took []time.Duration
	for b.Loop() {
		r.clock.Advance(time.Second)
		r.ctl.Observe(high)
		r.ctl.Step(ctx)
		r.clock.Advance(time.Second)
		before := len(r.sim.Writes())
		start := time.Now()
		r.ctl.Observe(low)
		r.ctl.Step(ctx)
		took = append(took, time.Since(start))
		if len(r.sim.Writes()) == before {
			b.Fatal("no corrective write")
		}
	}
	reportPercentiles(b, took)
}

// BenchmarkReactionLease measures, over loopback Modbus TCP, the time from
// a setpoint being submitted to its first write being read back.
func BenchmarkReactionLease(b *testing.B) {
	t := &testing.T{}
	r := newCtlRig(t)
	defer func() {
		if r.store != nil {
			r.store.Close()
		}
	}()
	ctx := context.Background()
	rd, err := r.dev.Poll(ctx, r.clock.Now)
	if err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	v := uint64(0)
	for b.Loop() {
		r.clock.Advance(time.Second)
		r.ctl.Observe(rd)
		v++
		mode := hearth.ModeIdle
		if v%2 == 0 {
			mode = hearth.ModeAuto
		}
		before := len(r.sim.Writes())
		start := time.Now()
		r.ctl.Submit(lease(v, r.clock.Now(), time.Hour, mode, 0), r.clock.Instant())
		r.ctl.Step(ctx)
		took = append(took, time.Since(start))
		if len(r.sim.Writes()) == before {
			b.Fatal("no write for the new lease")
		}
	}
	reportPercentiles(b, took)
}
