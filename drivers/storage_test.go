package drivers_test

import (
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/clocktest"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/safety"
)

// storageRig is a simulator on a loopback socket and the storage controls
// of a device polling it, with a clock the test moves.
type storageRig struct {
	sim   *sim.Simulator
	clock *clocktest.Clock
	st    *drivers.Storage
	reg   func(point string) uint16
	bus   *drivers.Bus
}

func newStorageRig(t *testing.T, revert time.Duration) *storageRig {
	return newStorageRigWith(t, revert, sim.Config{MaxChargeW: 5000, MaxDischargeW: 5000, InitialSoC: 60})
}

// newStorageRigWith is newStorageRig for a simulator configured as cfg;
// its clock is the rig's.
func newStorageRigWith(t *testing.T, revert time.Duration, cfg sim.Config) *storageRig {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)) // night: no PV
	cfg.Now = clock.Now
	s := sim.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.ServeTCP(ctx, ln) }()
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: ln.Addr().String(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close(); cancel(); <-done })
	dev := drivers.NewSunSpecDevice("battery", bus, 1)
	reg := func(point string) uint16 {
		a, ok := s.PointAddr(124, point)
		if !ok {
			t.Fatalf("simulator has no 124.%s", point)
		}
		return a
	}
	return &storageRig{sim: s, clock: clock, st: drivers.NewStorage(dev, revert), reg: reg, bus: bus}
}

// approve gets a command through the only path there is: the safety
// evaluator, with limits wide enough to pass w unchanged.
func approve(t *testing.T, device string, mode hearth.Mode, w hearth.Watts) safety.Approved {
	t.Helper()
	e, err := safety.NewEvaluator(safety.Limits{
		SoCMinPct: 5, SoCMaxPct: 100, MaxChargeW: 10000, MaxDischargeW: 10000, RampWPerS: 1e9,
		MaxReadingAge: time.Minute, CellVMin: 2, CellVMax: 4, TempCMin: -40, TempCMax: 90,
		MaxLease: time.Hour, Fallback: hearth.ModeAuto,
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	obs := safety.Observation{At: now, Reading: hearth.Reading{Device: device, Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}}}
	in := safety.Input{Now: now, Target: safety.Target{Mode: mode, Power: w}, Devices: []safety.Observation{obs}}
	e.Evaluate(in)
	in.Now = in.Now.Add(time.Second)
	in.Devices[0].At = in.Now
	a := e.Evaluate(in).Commands[0]
	if a.Power() != w {
		t.Fatalf("evaluator approved %v, want %v W", a, w)
	}
	return a
}

func TestStorageWritesModel124(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		mode    hearth.Mode
		w       hearth.Watts
		rates   []uint16 // OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms
		storctl uint16
		simMode sim.Mode
	}{
		{"discharge", hearth.ModePower, 2500, []uint16{5000, 0, 0, 30}, 2, sim.ModeDischarge},
		{"charge", hearth.ModePower, -1234, []uint16{0, 2468, 0, 30}, 1, sim.ModeCharge},
		{"hold zero", hearth.ModePower, 0, []uint16{0, 0, 0, 30}, 3, sim.ModeNet},
		{"above WChaMax", hearth.ModePower, 7000, []uint16{10000, 0, 0, 30}, 2, sim.ModeDischarge},
		{"auto", hearth.ModeAuto, 0, nil, 0, sim.ModeSelfConsumption},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newStorageRig(t, 30*time.Second)
			st, err := r.st.Apply(context.Background(), approve(t, "battery", c.mode, c.w))
			if err != nil {
				t.Fatal(err)
			}
			if st.StorCtlMod != c.storctl {
				t.Errorf("read back StorCtl_Mod %d, want %d", st.StorCtlMod, c.storctl)
			}
			var want []sim.Write
			if c.rates != nil {
				want = append(want, sim.Write{Func: 0x10, Addr: r.reg("OutWRte"), Values: c.rates})
			}
			want = append(want, sim.Write{Func: 0x10, Addr: r.reg("StorCtl_Mod"), Values: []uint16{c.storctl}})
			got := r.sim.Writes()
			if len(got) != len(want) {
				t.Fatalf("got %d writes %+v, want %+v", len(got), got, want)
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.Func != w.Func || g.Addr != w.Addr || g.Exception != 0 || !equalRegs(g.Values, w.Values) {
					t.Errorf("write %d: got func %#x addr %d values %v exception %d, want func %#x addr %d values %v",
						i, g.Func, g.Addr, g.Values, g.Exception, w.Func, w.Addr, w.Values)
				}
			}
			if s := r.sim.State(); s.Mode != c.simMode {
				t.Errorf("simulator in mode %s, want %s", s.Mode, c.simMode)
			}
			if c.mode == hearth.ModePower && c.w != 7000 {
				if s := r.sim.State(); s.BatteryW != c.w {
					t.Errorf("simulator battery at %v W, want %v W", s.BatteryW, c.w)
				}
			}
		})
	}
}

func equalRegs(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStorageRefusesWhatSafetyDidNotApprove(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	r.wantRefused(t, safety.Approved{}, "the zero Approved")
	r.wantRefused(t, approve(t, "other", hearth.ModePower, 1000), "a command approved for another device")
}

// wantRefused checks Apply refuses a, and that nothing was written so far.
func (r *storageRig) wantRefused(t *testing.T, a safety.Approved, what string) {
	t.Helper()
	if _, err := r.st.Apply(context.Background(), a); err == nil {
		t.Errorf("%s was applied", what)
	}
	if w := r.sim.Writes(); len(w) != 0 {
		t.Errorf("%s: wrote %+v", what, w)
	}
}

// TestStorageRevertTimer checks the device drops the command by itself
// when no refresh comes, and keeps it while refreshes come every third of
// the timer.
func TestStorageRevertTimer(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	a := approve(t, "battery", hearth.ModePower, 2000)
	ctx := context.Background()
	for i := 0; i < 6; i++ {
		if _, err := r.st.Apply(ctx, a); err != nil {
			t.Fatal(err)
		}
		r.clock.Advance(10 * time.Second)
		if s := r.sim.State(); s.Reverted || s.BatteryW != 2000 {
			t.Fatalf("refresh %d: simulator reverted=%v at %v W, want holding 2000 W", i, s.Reverted, s.BatteryW)
		}
	}
	r.clock.Advance(21 * time.Second)
	if s := r.sim.State(); !s.Reverted || s.Mode != sim.ModeSelfConsumption {
		t.Fatalf("31 s after the last write: reverted=%v mode %s, want reverted to self-consumption", s.Reverted, s.Mode)
	}
}

func TestStorageWriteRefused(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	ctx := context.Background()
	a := approve(t, "battery", hearth.ModePower, 1000)
	if _, err := r.st.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	r.sim.SetFault(sim.Fault{Exception: 0x04, Requests: 1})
	if _, err := r.st.Apply(ctx, a); err == nil {
		t.Fatal("a refused write reported success")
	}
	// The next apply finds the model again and succeeds.
	if _, err := r.st.Apply(ctx, a); err != nil {
		t.Fatalf("apply after a refused write: %v", err)
	}
}

// rateWrites returns the OutWRte and InWRte values written, as the
// device's int16 registers, oldest first.
func (r *storageRig) rateWrites() (out, in []int16) {
	for _, w := range r.sim.Writes() {
		for i, v := range w.Values {
			switch w.Addr + uint16(i) {
			case r.reg("OutWRte"):
				out = append(out, int16(v))
			case r.reg("InWRte"):
				in = append(in, int16(v))
			}
		}
	}
	return out, in
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestStorageStatusWatts: Apply reports, in watts, what the written
// registers ask for and what the read-back registers hold.
func TestStorageStatusWatts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		mode      hearth.Mode
		w         hearth.Watts
		commanded float64
		saturated bool
	}{
		{hearth.ModePower, 2500, 2500, false},
		{hearth.ModePower, -1234, -1234, false},
		{hearth.ModePower, 1234.567, 1234.5, false}, // cut towards zero to 0.01 %
		{hearth.ModePower, 0, 0, false},
		{hearth.ModePower, 7000, 5000, true}, // above 100 % of WChaMax
		{hearth.ModePower, -7000, -5000, true},
		{hearth.ModeAuto, 0, 0, false},
	} {
		r := newStorageRig(t, 30*time.Second)
		st, err := r.st.Apply(context.Background(), approve(t, "battery", c.mode, c.w))
		if err != nil {
			t.Fatal(err)
		}
		if !near(st.CommandedW, c.commanded) || !near(st.HeldW, c.commanded) || st.Saturated != c.saturated {
			t.Errorf("%s %v W: commanded %v W, held %v W, saturated %v; want %v W, %v W, %v",
				c.mode, c.w, st.CommandedW, st.HeldW, st.Saturated, c.commanded, c.commanded, c.saturated)
		}
		if st.OutRefW != 5000 || st.InRefW != 5000 || st.RateSF != -2 {
			t.Errorf("%s %v W: references %v/%v W at SF %d, want 5000/5000 W at -2", c.mode, c.w, st.OutRefW, st.InRefW, st.RateSF)
		}
	}
}

// TestStorageRateSaturates: at InOutWRte_SF -3, 40 % (2000 W of 5000 W)
// is 40000, beyond int16. The rate register saturates at 32767 (32.767 %,
// 1638.35 W) and the status says so; nothing wraps to a negative rate,
// which the device would take as the opposite direction.
func TestStorageRateSaturates(t *testing.T) {
	t.Parallel()
	for _, w := range []hearth.Watts{2000, -2000} {
		r := newStorageRig(t, 30*time.Second)
		if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", -3); err != nil {
			t.Fatal(err)
		}
		st, err := r.st.Apply(context.Background(), approve(t, "battery", hearth.ModePower, w))
		if err != nil {
			t.Fatalf("%v W: %v", w, err)
		}
		want := 1638.35 * float64(w) / 2000
		if !st.Saturated || !near(st.CommandedW, want) || !near(st.HeldW, want) {
			t.Errorf("%v W: saturated %v, commanded %v W, held %v W; want saturated at %v W", w, st.Saturated, st.CommandedW, st.HeldW, want)
		}
		out, in := r.rateWrites()
		for _, v := range append(out, in...) {
			if v < 0 {
				t.Errorf("%v W: a rate register was written %d: wrapped", w, v)
			}
		}
		if rates := map[bool][]int16{true: out, false: in}[w > 0]; len(rates) != 1 || rates[0] != 32767 {
			t.Errorf("%v W: wrote rates %v, want 32767", w, rates)
		}
		if got := r.sim.State().BatteryW; !near(float64(got), want) {
			t.Errorf("%v W: the simulator runs at %v W, want %v W", w, got, want)
		}
	}
}

// TestStorageRateScaleFactors: a scale factor so coarse that no rate but
// 0 fits writes 0 and says saturated; one outside SunSpec's -10..10 is
// refused without a write.
func TestStorageRateScaleFactors(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 3); err != nil { // a raw step of 1000 %
		t.Fatal(err)
	}
	st, err := r.st.Apply(context.Background(), approve(t, "battery", hearth.ModePower, 2000))
	if err != nil || !st.Saturated || st.CommandedW != 0 || st.OutWRte != 0 {
		t.Errorf("SF 3: %+v, %v; want 0 written, saturated", st, err)
	}

	r = newStorageRig(t, 30*time.Second)
	if err := r.sim.SetRaw(124, "InOutWRte_SF", 11); err != nil {
		t.Fatal(err)
	}
	r.wantRefused(t, approve(t, "battery", hearth.ModePower, 2000), "a command at InOutWRte_SF 11")
}

// TestStorageScaleFactorChanges: InOutWRte_SF changes 0 → 1 under a
// 1500 W command. The next refresh reads the scale factor again before it
// writes, so it writes 3 (30 % at 10^1), not 30 (300 % at the new scale,
// ten times the power), and the device holds 1500 W at once.
func TestStorageScaleFactorChanges(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	ctx := context.Background()
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 0); err != nil {
		t.Fatal(err)
	}
	a := approve(t, "battery", hearth.ModePower, 1500)
	if _, err := r.st.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 1); err != nil {
		t.Fatal(err)
	}
	st, err := r.st.Apply(ctx, a)
	if err != nil || st.RateSF != 1 || st.OutWRte != 3 || !near(st.HeldW, 1500) {
		t.Errorf("refresh after the scale factor changed: %+v, %v; want OutWRte 3 at SF 1 holding 1500 W", st, err)
	}
	if out, _ := r.rateWrites(); len(out) != 2 || out[0] != 30 || out[1] != 3 {
		t.Errorf("OutWRte written %v, want [30 3]: 30 %% at SF 0, then 30 %% at SF 1", out)
	}
	if got := r.sim.State().BatteryW; got != 1500 {
		t.Errorf("the simulator runs at %v W, want 1500 W", got)
	}
}

// TestStorageScaleFactorSentinel: an InOutWRte_SF that turns into the
// not-implemented sentinel, or outside SunSpec's -10..10, under a running
// command stops the writes with an error naming it: no rate is written at
// a scale nobody knows.
func TestStorageScaleFactorSentinel(t *testing.T) {
	t.Parallel()
	for _, raw := range []int64{0x8000, 11} {
		r := newStorageRig(t, 30*time.Second)
		ctx := context.Background()
		a := approve(t, "battery", hearth.ModePower, 1500)
		if _, err := r.st.Apply(ctx, a); err != nil {
			t.Fatal(err)
		}
		before := len(r.sim.Writes())
		if err := r.sim.SetRaw(124, "InOutWRte_SF", raw); err != nil {
			t.Fatal(err)
		}
		_, err := r.st.Apply(ctx, a)
		if err == nil || !strings.Contains(err.Error(), "InOutWRte_SF") {
			t.Errorf("SF raw %#x: %v, want an error naming InOutWRte_SF", raw, err)
		}
		if w := r.sim.Writes()[before:]; len(w) != 0 {
			t.Errorf("SF raw %#x: wrote %+v, want nothing", raw, w)
		}
	}
}

// TestStorageDischargeReference: a device whose discharge maximum (model
// 802 WDisChaRteMax, 10 kW) is larger than WChaMax (5 kW) gets OutWRte
// against the larger one, so whichever of the two it takes for 100 %, it
// is never asked for more than approved.
func TestStorageDischargeReference(t *testing.T) {
	t.Parallel()
	r := newStorageRigWith(t, 30*time.Second, sim.Config{MaxChargeW: 5000, MaxDischargeW: 10000, InitialSoC: 60})
	got, err := r.st.Apply(context.Background(), approve(t, "battery", hearth.ModePower, 2000))
	if err != nil {
		t.Fatal(err)
	}
	if got.OutRefW != 10000 || got.InRefW != 5000 || got.OutWRte != 2000 {
		t.Errorf("references %v/%v W, OutWRte %d; want 10000/5000 W and 2000 (20 %%)", got.OutRefW, got.InRefW, got.OutWRte)
	}
	pct := float64(got.OutWRte) / 100
	for _, ref := range []float64{5000, 10000} {
		if w := pct / 100 * ref; w > 2000 {
			t.Errorf("OutWRte %d (%v %%) of %v W is %v W, above the 2000 W approved", got.OutWRte, pct, ref, w)
		}
	}
	if b := r.sim.State().BatteryW; b > 2000 || b <= 0 {
		t.Errorf("simulator discharges at %v W, want (0, 2000]", b)
	}
}

// budgeted is the rig's device with the sunspec profile's write
// budget, on the rig's clock.
func (r *storageRig) budgeted(t *testing.T, revert time.Duration) *drivers.Storage {
	t.Helper()
	p, err := drivers.EmbeddedProfile("sunspec")
	if err != nil {
		t.Fatal(err)
	}
	dev := drivers.NewSunSpecDevice("battery", r.bus, 1, drivers.WithProfile(p))
	return drivers.NewStorage(dev, revert, drivers.WriteBudget(p.Model124Writes(), r.clock.Now))
}

// TestStorageBudgetHoldsOnlyWhatTheDeviceRuns: the budget holds a change
// within the deadband only while the model 124 block read before it shows
// the last command standing for the same power. A scale factor that
// changed under the command (the same raw rate now ten times the power),
// or a device that dropped the command (another tool wrote StorCtl_Mod
// 0), gets the new command written at once, at the scale just read.
func TestStorageBudgetHoldsOnlyWhatTheDeviceRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newStorageRig(t, time.Minute)
	st := r.budgeted(t, time.Minute)
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 0); err != nil {
		t.Fatal(err)
	}
	apply := func(w hearth.Watts) drivers.StorageStatus {
		t.Helper()
		r.clock.Advance(time.Second)
		got, err := st.Apply(ctx, approve(t, "battery", hearth.ModePower, w))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	apply(1500)
	if got := apply(1520); !got.Deferred || got.HeldW != 1500 {
		t.Fatalf("a change within the deadband: %+v, want it held at 1500 W", got)
	}
	if err := r.sim.SetScaleFactor(124, "InOutWRte_SF", 1); err != nil {
		t.Fatal(err)
	}
	if got := apply(1520); got.Deferred || got.OutWRte != 3 || got.RateSF != 1 {
		t.Fatalf("after InOutWRte_SF changed to 1: %+v, want OutWRte 3 written at once (30 %% at 10^1)", got)
	}
	if b := r.sim.State().BatteryW; b != 1500 {
		t.Fatalf("the battery runs %v W, want 1500 W", b)
	}
	other := drivers.NewStorage(drivers.NewSunSpecDevice("battery", r.bus, 1), time.Minute) // another tool: StorCtl_Mod 0
	if _, err := other.Apply(ctx, approve(t, "battery", hearth.ModeAuto, 0)); err != nil {
		t.Fatal(err)
	}
	if got := apply(1540); got.Deferred || got.StorCtlMod != 2 {
		t.Fatalf("after the device dropped the command: %+v, want the command written at once", got)
	}
	if b := r.sim.State().BatteryW; b != 1500 {
		t.Fatalf("the battery runs %v W, want 1500 W (30 %% of 5000 W)", b)
	}
}

// TestStorageBudgetWeighsTheApprovedPower: on a window device whose
// discharge reference (model 802 WDisChaRteMax, 10 kW) differs from its
// charge reference (WChaMax, 5 kW), the rates of one command stand for
// powers a step apart, so the power they stand for together is no
// measure of the command. The budget weighs the approved power: a 500 W
// change is a change, written within the burst, not a repeat.
func TestStorageBudgetWeighsTheApprovedPower(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newStorageRigWith(t, time.Minute, sim.Config{MaxChargeW: 5000, MaxDischargeW: 10000, InitialSoC: 60, PowerWindow: true})
	p, err := drivers.EmbeddedProfile("fronius_gen24")
	if err != nil {
		t.Fatal(err)
	}
	dev := drivers.NewSunSpecDevice("battery", r.bus, 1, drivers.WithProfile(p))
	st := drivers.NewStorage(dev, time.Minute, drivers.PowerWindow(), drivers.WriteBudget(p.Model124Writes(), r.clock.Now))
	for _, c := range []struct {
		w   hearth.Watts
		out int16
	}{{1234.567, 1234}, {1734.567, 1734}} { // 12.34 % and 17.34 % of 10 kW
		r.clock.Advance(time.Second)
		got, err := st.Apply(ctx, approve(t, "battery", hearth.ModePower, c.w))
		if err != nil {
			t.Fatal(err)
		}
		if got.Deferred || got.OutWRte != c.out {
			t.Fatalf("%v W: %+v, want OutWRte %d written", c.w, got, c.out)
		}
	}
}

// TestStorageRefusesUnderLocalControl: a battery whose model 802
// LocRemCtl reads LOCAL gets no model 124 command (it would not follow it,
// and would take it up unasked once switched to remote): Apply writes
// nothing and returns ErrPrecondition naming the setting. A release is
// still written, and back under remote control the command goes through.
func TestStorageRefusesUnderLocalControl(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	r.sim.SetLocalControl(true)
	ctx := context.Background()
	_, err := r.st.Apply(ctx, approve(t, "battery", hearth.ModePower, 2500))
	if !errors.Is(err, drivers.ErrPrecondition) || !strings.Contains(err.Error(), "LocRemCtl reads 1 (LOCAL)") ||
		!strings.Contains(err.Error(), drivers.LocalControlHint) || !strings.Contains(err.Error(), "nothing written") {
		t.Fatalf("discharge under local control: err %v, want a precondition naming LocRemCtl and the hint", err)
	}
	if w := r.sim.Writes(); len(w) != 0 {
		t.Fatalf("discharge under local control wrote %+v, want nothing", w)
	}
	if _, err := r.st.Apply(ctx, approve(t, "battery", hearth.ModeAuto, 0)); err != nil {
		t.Fatalf("release under local control: %v", err)
	}
	if w := r.sim.Writes(); len(w) != 1 || w[0].Addr != r.reg("StorCtl_Mod") || !equalRegs(w[0].Values, []uint16{0}) {
		t.Fatalf("release under local control wrote %+v, want StorCtl_Mod 0 alone", w)
	}
	r.sim.SetLocalControl(false)
	if _, err := r.st.Apply(ctx, approve(t, "battery", hearth.ModePower, 2500)); err != nil {
		t.Fatalf("discharge back under remote control: %v", err)
	}
	if s := r.sim.State(); s.BatteryW != 2500 {
		t.Errorf("back under remote control the simulator runs %v W, want 2500", s.BatteryW)
	}
}

// TestSunSpecPollReadsLocalControl: the poll reports model 802 LocRemCtl
// as local_control, 1 while the battery is under local control and 0
// back under remote control, within the requests the plan says.
func TestSunSpecPollReadsLocalControl(t *testing.T) {
	t.Parallel()
	r := newStorageRig(t, 30*time.Second)
	d := drivers.NewSunSpecDevice("battery", r.bus, 1)
	ctx := context.Background()
	if _, err := d.Poll(ctx, r.clock.Now); err != nil {
		t.Fatal(err)
	}
	for _, local := range []bool{true, false} {
		r.sim.SetLocalControl(local)
		before := r.bus.Stats().Requests
		rd, err := d.Poll(ctx, r.clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]float64{true: 1, false: 0}[local]
		if p := rd.Points[drivers.LocalControlPoint]; !p.Good() || p.Value != want {
			t.Errorf("under local control %t: %s = %+v, want %g", local, drivers.LocalControlPoint, p, want)
		}
		if _, plan := d.PollPlan(); r.bus.Stats().Requests-before != uint64(len(plan)) {
			t.Errorf("a poll took %d requests, its plan says %d", r.bus.Stats().Requests-before, len(plan))
		}
	}
}
