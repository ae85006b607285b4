package drivers_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"github.com/hearth-energy/hearth/safety"
)

// installerSettings are what an installer sets on each device before
// hearth may command it (docs/devices.md).
var installerSettings = map[string]map[uint16]uint16{
	"solaredge_storedge": {0xE004: 4, 0xE005: 1},
}

// vendorRig is one vendor simulator on a real TCP socket, the profile's
// control executor and its reader, on a clock the test moves.
type vendorRig struct {
	sim   *sim.Vendor
	clock *clocktest.Clock
	dev   *drivers.VendorDevice
	read  *drivers.ProfileDevice
	bus   *drivers.Bus
	p     *drivers.Profile
}

const rigLoadW = 500 // house load; no PV: self-consumption discharges 500 W

func newVendorRig(t *testing.T, profile string, settings map[uint16]uint16) *vendorRig {
	t.Helper()
	return newVendorRigFor(t, sim.VendorConfig{Profile: profile, Settings: settings})
}

// newVendorRigFor serves the simulator cfg describes, at the rig's house
// load and on its clock, and drives it through cfg.Profile.
func newVendorRigFor(t *testing.T, cfg sim.VendorConfig) *vendorRig {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC))
	cfg.LoadW, cfg.Now = rigLoadW, clock.Now
	v, err := sim.NewVendor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.ServeTCP(ctx, ln) }()
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: ln.Addr().String(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close(); cancel(); <-done })
	p, err := drivers.EmbeddedProfile(cfg.Profile)
	if err != nil {
		t.Fatal(err)
	}
	return &vendorRig{sim: v, clock: clock, bus: bus, p: p,
		dev:  drivers.NewVendorDevice(cfg.Profile, bus, v.Unit(), p, clock.Now),
		read: drivers.NewProfileDevice(cfg.Profile, bus, v.Unit(), p)}
}

// apply approves w through safety and applies it; auto releases.
func (r *vendorRig) apply(t *testing.T, mode hearth.Mode, w hearth.Watts) drivers.VendorStatus {
	t.Helper()
	st, err := r.dev.Apply(context.Background(), approve(t, r.dev.Name(), mode, w))
	if err != nil {
		t.Fatalf("apply %s %v W: %v", mode, w, err)
	}
	return st
}

// follows checks the simulated battery runs want and that hearth reads
// the same, in its own sign.
func (r *vendorRig) follows(t *testing.T, what string, want float64) {
	t.Helper()
	checkFollows(t, r.clock, what, want, func() hearth.Watts { return r.sim.State().BatteryW }, r.read.Poll)
}

// checkFollows checks, a second later on clock, that the simulated
// battery (batteryW) runs want and that hearth reads the same (poll), in
// its own sign.
func checkFollows(t *testing.T, clock *clocktest.Clock, what string, want float64, batteryW func() hearth.Watts,
	poll func(context.Context, func() time.Time) (hearth.Reading, error)) {
	t.Helper()
	clock.Advance(time.Second)
	if got := float64(batteryW()); math.Abs(got-want) > 1 {
		t.Fatalf("%s: the battery runs %.0f W, want %.0f W (positive discharging)", what, got, want)
	}
	rd, err := poll(context.Background(), clock.Now)
	if err != nil {
		t.Fatalf("%s: poll: %v", what, err)
	}
	if p := rd.Points["power_w"]; !p.Good() || math.Abs(p.Value-want) > 1 {
		t.Fatalf("%s: hearth reads power_w %+v, want %.0f W", what, p, want)
	}
}

// controllable lists the built-in profiles with a control section.
func controllable(t *testing.T) []string {
	var out []string
	for _, n := range drivers.EmbeddedProfiles() {
		p, err := drivers.EmbeddedProfile(n)
		if err != nil {
			t.Fatal(err)
		}
		if p.Control != nil {
			out = append(out, n)
		}
	}
	if len(out) < 3 {
		t.Fatalf("controllable profiles %v: want at least sungrow_sh, solaredge_storedge, huawei_sun2000", out)
	}
	return out
}

// commandable lists every built-in profile hearth commands: those with a
// control section and the SunSpec ones (model 124).
func commandable(t *testing.T) []string {
	out := controllable(t)
	for _, n := range drivers.EmbeddedProfiles() {
		if p, _ := drivers.EmbeddedProfile(n); p.Discovery == "sunspec" {
			out = append(out, n)
		}
	}
	if !slices.Contains(out, "sunspec") || !slices.Contains(out, "fronius_gen24") {
		t.Fatalf("commandable profiles %v: want sunspec and fronius_gen24 among them", out)
	}
	return out
}

// contractRig is a commanded device on its simulator, as the contract
// suite drives it: a vendor's control section (vendorRig) or model 124
// (storageContractRig).
type contractRig interface {
	// command approves w through safety and applies it (auto releases);
	// deferred says the write budget held the last command instead.
	command(t *testing.T, mode hearth.Mode, w hearth.Watts) (deferred bool)
	// follows checks, a second later, that the simulated battery runs
	// want and hearth reads the same, in its own sign.
	follows(t *testing.T, what string, want float64)
	advance(d time.Duration)
	revertTimeout() time.Duration
	guarded() bool
	passiveRelease() bool
	// lapsed says the device's own timeout dropped the command, with the
	// simulator's state for a message.
	lapsed() (bool, any)
	// flashWrites counts the write requests that touched registers the
	// device keeps, or may keep, in flash.
	flashWrites() int
	// budget is the write budget's interval; 0: no budgeted register.
	budget() time.Duration
	// restart releases the device as a new agent does at start.
	restart(t *testing.T)
}

func newContractRig(t *testing.T, name string) contractRig {
	p, err := drivers.EmbeddedProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	if p.Discovery == "sunspec" {
		return newStorageContractRig(t, p)
	}
	return newVendorRig(t, name, installerSettings[name])
}

func (r *vendorRig) command(t *testing.T, mode hearth.Mode, w hearth.Watts) bool {
	t.Helper()
	return r.apply(t, mode, w).Deferred
}
func (r *vendorRig) advance(d time.Duration)      { r.clock.Advance(d) }
func (r *vendorRig) revertTimeout() time.Duration { return r.dev.RevertTimeout() }
func (r *vendorRig) guarded() bool                { return r.dev.Guarded() }
func (r *vendorRig) passiveRelease() bool         { return r.p.Control.Release.Passive }
func (r *vendorRig) flashWrites() int             { return r.sim.State().FlashWrites }
func (r *vendorRig) budget() time.Duration        { return r.p.Control.Budget.MinInterval.D() }
func (r *vendorRig) lapsed() (bool, any) {
	st := r.sim.State()
	return !st.Forced && st.Reverts > 0, st
}
func (r *vendorRig) restart(t *testing.T) {
	t.Helper()
	next := drivers.NewVendorDevice(r.dev.Name(), r.bus, r.sim.Unit(), r.p, r.clock.Now)
	if _, err := next.Apply(context.Background(), approve(t, r.dev.Name(), hearth.ModeAuto, 0)); err != nil {
		t.Fatal(err)
	}
}

// storageContractRig is the SunSpec simulator (a power window for a
// profile with storage_control: window) on a real TCP socket, commanded
// through model 124 as the agent does it: the profile's write budget and
// the default revert timeout.
type storageContractRig struct {
	sim   *sim.Simulator
	clock *clocktest.Clock
	st    *drivers.Storage
	dev   *drivers.SunSpecDevice
	p     *drivers.Profile
}

// contractRevert is safety.revert_timeout's default.
const contractRevert = time.Minute

func newStorageContractRig(t *testing.T, p *drivers.Profile) *storageContractRig {
	t.Helper()
	window := p.StorageControl == drivers.StorageControlWindow
	r := newStorageRigWith(t, contractRevert, sim.Config{MaxChargeW: 5000, MaxDischargeW: 5000, InitialSoC: 50, PowerWindow: window})
	r.sim.SetLoad(rigLoadW)
	r.sim.SetPV(0)
	dev := drivers.NewSunSpecDevice(p.Name, r.bus, 1, drivers.WithProfile(p))
	opts := []drivers.StorageOption{drivers.WriteBudget(p.Model124Writes(), r.clock.Now)}
	if window {
		opts = append(opts, drivers.PowerWindow())
	}
	return &storageContractRig{sim: r.sim, clock: r.clock, dev: dev, p: p, st: drivers.NewStorage(dev, contractRevert, opts...)}
}

func (r *storageContractRig) command(t *testing.T, mode hearth.Mode, w hearth.Watts) bool {
	t.Helper()
	st, err := r.st.Apply(context.Background(), approve(t, r.st.Name(), mode, w))
	if err != nil {
		t.Fatalf("apply %s %v W: %v", mode, w, err)
	}
	return st.Deferred
}

func (r *storageContractRig) follows(t *testing.T, what string, want float64) {
	t.Helper()
	checkFollows(t, r.clock, what, want, func() hearth.Watts { return r.sim.State().BatteryW }, r.dev.Poll)
}

func (r *storageContractRig) advance(d time.Duration)      { r.clock.Advance(d) }
func (r *storageContractRig) revertTimeout() time.Duration { return r.st.RevertTimeout() }
func (r *storageContractRig) guarded() bool                { return true } // InOutWRte_RvrtTms
func (r *storageContractRig) passiveRelease() bool         { return false }
func (r *storageContractRig) flashWrites() int             { return r.sim.State().FlashWrites }
func (r *storageContractRig) budget() time.Duration {
	if m := r.p.Model124Writes(); m.Storage != drivers.StorageRAM {
		return m.Budget.MinInterval.D()
	}
	return 0
}
func (r *storageContractRig) lapsed() (bool, any) {
	st := r.sim.State()
	return st.Reverted && st.Mode == sim.ModeSelfConsumption, st
}
func (r *storageContractRig) restart(t *testing.T) {
	t.Helper()
	next := drivers.NewStorage(r.dev, contractRevert)
	if _, err := next.Apply(context.Background(), approve(t, r.st.Name(), hearth.ModeAuto, 0)); err != nil {
		t.Fatal(err)
	}
}

// TestVendorContract runs one behaviour contract over every commanded
// profile against its simulator, control sections and model 124 alike:
// charge 2000 W, discharge 1500 W, idle and release are followed with
// hearth's sign, and a command left behind (the agent gone mid-lease)
// lapses by the device's own timeout, or, on a device without one, holds
// until the next start releases it.
func TestVendorContract(t *testing.T) {
	t.Parallel()
	for _, name := range commandable(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newContractRig(t, name)
			r.command(t, hearth.ModeAuto, 0) // at start, with no lease
			r.follows(t, "start", rigLoadW)
			r.command(t, hearth.ModePower, -2000)
			r.follows(t, "charge 2000 W", -2000)
			r.advance(2 * time.Minute)
			r.command(t, hearth.ModePower, 1500)
			r.follows(t, "discharge 1500 W", 1500)
			r.advance(2 * time.Minute)
			r.command(t, hearth.ModePower, 0)
			r.follows(t, "idle", 0)
			r.command(t, hearth.ModeAuto, 0)
			if r.passiveRelease() {
				// No write clears the command: it lapses by the device's timeout.
				r.advance(r.revertTimeout())
			}
			r.follows(t, "release", rigLoadW)

			// The agent dies mid-lease: nothing is written any more.
			r.command(t, hearth.ModePower, 1000)
			r.follows(t, "discharge 1000 W", 1000)
			r.advance(r.revertTimeout() + time.Second)
			if r.guarded() {
				if ok, st := r.lapsed(); !ok {
					t.Fatalf("after the device timeout %v the command still holds: %+v", r.revertTimeout(), st)
				}
				r.follows(t, "after the device timeout", rigLoadW)
				return
			}
			// No device timeout: the battery holds the last command, as
			// the vendor documents; the next agent start releases it.
			r.follows(t, "unguarded, agent gone", 1000)
			r.restart(t)
			r.follows(t, "released at the next start", rigLoadW)
		})
	}
}

// TestVendorFlashBudget drives each commanded profile, control sections
// and model 124 alike, as self_consumption does for ten simulated
// minutes, a new power every second, and checks the writes to
// flash-class registers stay within the profile's budget: one change per
// interval and the device's refreshes (a third of its timeout), and that
// the battery still runs a command near the target all along: the
// device's timeout never lapses under deferred changes.
func TestVendorFlashBudget(t *testing.T) {
	t.Parallel()
	for _, name := range commandable(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newContractRig(t, name)
			rng := rand.New(rand.NewPCG(1, 2))
			before := r.flashWrites()
			r.command(t, hearth.ModePower, -1000)
			start := r.flashWrites()
			perCommand := start - before // the first command, arming included
			const run = 10 * time.Minute
			deferred := 0
			for s := time.Duration(0); s < run; s += time.Second {
				r.advance(time.Second)
				w := hearth.Watts(-1000 - rng.IntN(600))
				if r.command(t, hearth.ModePower, w) {
					deferred++
				}
				if ok, st := r.lapsed(); ok {
					t.Fatalf("after %v of changing commands the device's timeout dropped the command: %+v", s+time.Second, st)
				}
			}
			got := r.flashWrites() - start
			b := r.budget()
			if b == 0 {
				// No budgeted register: nothing may reach flash.
				if got != 0 || start != 0 {
					t.Fatalf("%d flash-class writes from a profile that writes RAM only", got+start)
				}
				return
			}
			limit := (int(run/b) + drivers.BudgetBurst + 1) * perCommand
			if r.guarded() {
				limit += (int(run/(r.revertTimeout()/3)) + 1) * perCommand
			}
			t.Logf("%d flash-class write requests in %v of changing commands (bound %d), %d of 600 changes deferred", got, run, limit, deferred)
			if got > limit || got == 0 {
				t.Fatalf("%d flash-class write requests in %v of changing commands, want 1..%d (budget %v, %d requests a command)", got, run, limit, b, perCommand)
			}
			if deferred < 400 {
				t.Fatalf("only %d of 600 changes deferred", deferred)
			}
		})
	}
}

// TestSolarEdgeRefusesWithoutRemoteControl: SolarEdge stores remote
// commands and ignores them unless the installer set remote control;
// hearth reads the settings first and says which to change, writing
// nothing.
func TestSolarEdgeRefusesWithoutRemoteControl(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		settings map[uint16]uint16
		hint     string
	}{
		{nil, "0xE004"},
		{map[uint16]uint16{0xE004: 4}, "0xE005"},
	} {
		r := newVendorRig(t, "solaredge_storedge", c.settings)
		_, err := r.dev.Apply(context.Background(), approve(t, r.dev.Name(), hearth.ModePower, -2000))
		if !errors.Is(err, drivers.ErrPrecondition) || !strings.Contains(err.Error(), c.hint) {
			t.Fatalf("settings %v: err %v, want a precondition naming %s", c.settings, err, c.hint)
		}
		if w := r.sim.Writes(); len(w) != 0 {
			t.Fatalf("settings %v: wrote %+v before the device was set up", c.settings, w)
		}
	}
}

// TestSolarEdgeCommandIsOneBlock: the remote-control registers go in one
// FC 16, float32 low word first, the timeout with them, and are read back
// in one request.
func TestSolarEdgeCommandIsOneBlock(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "solaredge_storedge", installerSettings["solaredge_storedge"])
	r.apply(t, hearth.ModePower, 1500)
	var block []sim.Write
	for _, w := range r.sim.Writes() {
		if w.Addr >= 0xE00B && w.Addr <= 0xE011 || w.Addr < 0xE00B && int(w.Addr)+len(w.Values) > 0xE00B {
			block = append(block, w)
		}
	}
	if len(block) != 1 || block[0].Func != 0x10 || block[0].Addr != 0xE00B || len(block[0].Values) != 7 {
		t.Fatalf("writes to the remote-control block: %+v, want one FC 16 of 0xE00B..0xE011", block)
	}
	v := block[0].Values
	f := math.Float32frombits(uint32(v[6])<<16 | uint32(v[5]))
	if v[0] != 300 || v[1] != 0 || v[2] != 4 || f != 1500 {
		t.Fatalf("block %v: want timeout 300 s, mode 4, discharge limit 1500 W (float32, low word first)", v)
	}
	before := r.bus.Stats().Requests
	r.apply(t, hearth.ModePower, -1500)
	if n := r.bus.Stats().Requests - before; n != 2 {
		t.Fatalf("a command cost %d requests, want 2: the block's FC 16 and one read back", n)
	}
}

// TestHuaweiPeriodInMinutes: the forcible period is written in minutes
// and the command last; the device drops it when the minutes pass.
func TestHuaweiPeriodInMinutes(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "huawei_sun2000", nil)
	r.apply(t, hearth.ModePower, -2000)
	ws := r.sim.Writes()
	if last := ws[len(ws)-1]; last.Addr != 47100 || last.Values[0] != 1 {
		t.Fatalf("last write %+v, want the command 47100 = 1 last", last)
	}
	if got := r.sim.Holding(47083, 1)[0]; got != 5 {
		t.Fatalf("period 47083 = %d, want 5 (minutes)", got)
	}
	r.clock.Advance(4*time.Minute + 50*time.Second)
	if !r.sim.State().Forced {
		t.Fatal("the forcible charge lapsed before its 5 minutes")
	}
	r.clock.Advance(20 * time.Second)
	if r.sim.State().Forced {
		t.Fatal("the forcible charge still holds after its 5 minutes")
	}
}

// TestSungrowOutOfRangeIsRefused: a power beyond the model's range gets
// Sungrow's exception 4, and hearth reports the write failed.
func TestSungrowOutOfRangeIsRefused(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "sungrow_sh", nil)
	_, err := r.dev.Apply(context.Background(), approve(t, r.dev.Name(), hearth.ModePower, -6000)) // the simulated model takes 5000 W
	var ex *drivers.ExceptionError
	if !errors.As(err, &ex) || ex.Code != 4 {
		t.Fatalf("err %v, want Modbus exception 4", err)
	}
}

// TestVendorBudgetSettlesAfterRamp: a ramp's steps are written (the ramp
// is a safety limit), and so is the command that ends it even when it is
// within the deadband of the last step: the battery settles on the
// lease's power, not one step short of it.
func TestVendorBudgetSettlesAfterRamp(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "solaredge_storedge", installerSettings["solaredge_storedge"])
	e, err := safety.NewEvaluator(safety.Limits{
		SoCMinPct: 5, SoCMaxPct: 100, MaxChargeW: 10000, MaxDischargeW: 10000, RampWPerS: 450,
		MaxReadingAge: time.Minute, CellVMin: 2, CellVMax: 4, TempCMin: -40, TempCMax: 90,
		MaxLease: time.Hour, Fallback: hearth.ModeAuto,
	})
	if err != nil {
		t.Fatal(err)
	}
	var rules []hearth.Rule
	for range 4 {
		r.clock.Advance(time.Second)
		now := r.clock.Now()
		obs := safety.Observation{At: now, Reading: hearth.Reading{Device: r.dev.Name(), Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}}}
		dec := e.Evaluate(safety.Input{Now: now, Target: safety.Target{Mode: hearth.ModePower, Power: -500}, Devices: []safety.Observation{obs}})
		a := dec.Commands[0]
		st, err := r.dev.Apply(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		e.Confirm(a.Device(), hearth.Watts(st.HeldW))
		rules = append(rules, a.Rule())
	}
	if got := r.sim.State().BatteryW; got != -500 {
		t.Fatalf("after the ramp (rules %v) the battery runs %v W, want the lease's -500 W", rules, got)
	}
}

// TestVendorSetpointUnits: a power register that counts percent of a
// reference point, or amps at a voltage point, gets the approved watts
// converted with the reference read from the device, cut towards zero so
// the device is never asked for more than approved; the power reported
// held is what the written value stands for.
func TestVendorSetpointUnits(t *testing.T) {
	t.Parallel()
	base, err := drivers.EmbeddedProfile("sungrow_sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		unit, ref string
		raw       uint16
		held      float64
	}{
		{"pct", "nominal_power_w", 40, -2000}, // 2000 W of the simulated 5000 W nominal power
		{"A", "ac_v_a", 8, -8 * 230.1},        // 2000 W at 230.1 V is 8.69 A: 8 A, never 9
		{"W", "", 2000, -2000},
	} {
		t.Run(c.unit, func(t *testing.T) {
			t.Parallel()
			p := *base
			ctl := *base.Control
			ctl.Setpoint.Unit, ctl.Setpoint.Reference = c.unit, c.ref
			p.Control = &ctl
			r := newVendorRig(t, "sungrow_sh", nil)
			dev := drivers.NewVendorDevice("sungrow_sh", r.bus, r.sim.Unit(), &p, r.clock.Now)
			st, err := dev.Apply(context.Background(), approve(t, "sungrow_sh", hearth.ModePower, -2000))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.sim.Holding(13051, 1)[0]; got != c.raw || math.Abs(st.HeldW-c.held) > 0.01 {
				t.Fatalf("unit %s: wrote %d, held %v W; want %d, %v W", c.unit, got, st.HeldW, c.raw, c.held)
			}
		})
	}
}

// TestRevertTimeoutIsWhatTheDeviceHolds: Huawei's forcible period counts
// minutes, so a profile timeout of 90s is written as 2 minutes. The
// control loop counts a device it cannot reach at its last command until
// RevertTimeout has passed (and site limits with it), so RevertTimeout
// must be the 2 minutes the device runs: at RevertTimeout the command
// has lapsed, and a second before, it still holds.
func TestRevertTimeoutIsWhatTheDeviceHolds(t *testing.T) {
	t.Parallel()
	base, err := drivers.EmbeddedProfile("huawei_sun2000")
	if err != nil {
		t.Fatal(err)
	}
	p := *base
	ctl := *base.Control
	ctl.Timeout.Value = drivers.Duration(90 * time.Second)
	p.Control = &ctl
	r := newVendorRig(t, "huawei_sun2000", nil)
	dev := drivers.NewVendorDevice("huawei_sun2000", r.bus, r.sim.Unit(), &p, r.clock.Now)
	if _, err := dev.Apply(context.Background(), approve(t, dev.Name(), hearth.ModePower, -2000)); err != nil {
		t.Fatal(err)
	}
	if got := r.sim.Holding(47083, 1)[0]; got != 2 {
		t.Fatalf("period 47083 = %d min, want 2 (90 s rounded up)", got)
	}
	rt := dev.RevertTimeout()
	r.clock.Advance(rt - time.Second)
	if !r.sim.State().Forced {
		t.Fatalf("the command lapsed before RevertTimeout %v", rt)
	}
	r.clock.Advance(time.Second)
	if st := r.sim.State(); st.Forced {
		t.Fatalf("RevertTimeout %v has passed and the device still runs the command (%+v): the agent would count it released while it holds", rt, st)
	}
}

// TestVendorBudgetKeepsTheTimeoutArmed: self_consumption's target jitters
// within the deadband for longer than the device's timeout. Every change
// is deferred, but a third of the timeout after the last write the next
// one is written all the same, so the device's timeout never lapses
// under a command the agent still gives.
func TestVendorBudgetKeepsTheTimeoutArmed(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "huawei_sun2000", nil) // 5 min forcible period, 100 W deadband
	r.apply(t, hearth.ModePower, -1000)
	writes := 0
	for s := 0; s < 12*60; s++ {
		r.clock.Advance(time.Second)
		w := hearth.Watts(-1001 - s%40) // within the deadband of -1000, never -1000 again
		if st := r.apply(t, hearth.ModePower, w); !st.Deferred {
			writes++
		}
		if st := r.sim.State(); !st.Forced || st.Reverts != 0 {
			t.Fatalf("after %d s of commands within the deadband the device dropped the command: %+v", s+1, st)
		}
	}
	if limit := 12*60/int(r.dev.RevertTimeout().Seconds()/3) + 1; writes == 0 || writes > limit {
		t.Fatalf("%d writes in 12 min of deferred changes, want 1..%d (one a third of the timeout)", writes, limit)
	}
}

// TestSMACommandIsTheCompleteSet: every SMA command and the release write
// the battery management mode and all five limits (SMA takes nothing
// less), the limits in one FC 16, and read nothing back (the registers
// are write-only); the commanded direction's minimum and maximum carry
// the power.
func TestSMACommandIsTheCompleteSet(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "sma_storage", nil)
	u32 := func(v []uint16, i int) uint32 { return uint32(v[2*i])<<16 | uint32(v[2*i+1]) }
	for _, c := range []struct {
		mode  hearth.Mode
		w     hearth.Watts
		op    uint32
		lim   [5]uint32
		state float64
	}{
		{hearth.ModePower, -2000, 2289, [5]uint32{2000, 2000, 0, 0, 0}, -2000},
		{hearth.ModePower, 1500, 2290, [5]uint32{0, 0, 1500, 1500, 0}, 1500},
		{hearth.ModePower, 0, 2424, [5]uint32{0, 0, 0, 0, 0}, 0},
		{hearth.ModeAuto, 0, 2424, [5]uint32{0, 10000, 0, 10000, 0}, rigLoadW},
	} {
		before := len(r.sim.Writes())
		reqs := r.bus.Stats().Requests
		r.apply(t, c.mode, c.w)
		if n := r.bus.Stats().Requests - reqs; n != 2 {
			t.Fatalf("%s %v W cost %d requests, want 2 writes and no read back", c.mode, c.w, n)
		}
		ws := r.sim.Writes()[before:]
		if len(ws) != 2 || ws[0].Addr != 40793 || len(ws[0].Values) != 10 || ws[1].Addr != 40236 || len(ws[1].Values) != 2 {
			t.Fatalf("%s %v W wrote %+v, want the limits 40793..40802 in one FC 16, then the mode 40236", c.mode, c.w, ws)
		}
		for i, want := range c.lim {
			if got := u32(ws[0].Values, i); got != want {
				t.Fatalf("%s %v W: limit %d = %d, want %d (limits %v)", c.mode, c.w, 40793+2*i, got, want, ws[0].Values)
			}
		}
		if got := u32(ws[1].Values, 0); got != c.op {
			t.Fatalf("%s %v W: mode %d, want %d", c.mode, c.w, got, c.op)
		}
		r.follows(t, fmt.Sprintf("%s %v W", c.mode, c.w), c.state)
	}
}

// TestSMAStandbyFirmwareIsNotReadBack: on the firmware that takes the
// set and stays in standby, the write goes through and nothing can be
// read back (the registers are write-only): the device reports success,
// and only the measured power shows the battery does not follow, which
// the control loop judges (e2e TestSMAStandbyFirmwareIsReported).
func TestSMAStandbyFirmwareIsNotReadBack(t *testing.T) {
	t.Parallel()
	r := newVendorRigFor(t, sim.VendorConfig{Profile: "sma_storage", Quirk: "standby"})
	st, err := r.dev.Apply(context.Background(), approve(t, "sma_storage", hearth.ModePower, -2000))
	if err != nil || st.HeldW != -2000 {
		t.Fatalf("apply: %+v, %v; want the command taken (nothing to read back)", st, err)
	}
	r.clock.Advance(time.Minute)
	rd, err := r.read.Poll(context.Background(), r.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if got := rd.Points["power_w"]; !got.Good() || got.Value != 0 {
		t.Fatalf("power_w %+v, want the standby firmware's 0 W", got)
	}
}

// TestAlphaESSDispatchIsOneBlock: an Alpha ESS command is the dispatch
// block 0x0880–0x0888 in one FC 16, read back in one request: start 1,
// the active power 32000 + W (below 32000 charges, Alpha ESS's V1.23
// table), reactive power 32000 (0 var), mode 2, the target SoC the
// battery runs towards (0.4 % units), the dispatch time 300 s. The release
// writes the block back with start 0, whole.
func TestAlphaESSDispatchIsOneBlock(t *testing.T) {
	t.Parallel()
	r := newVendorRig(t, "alphaess", nil)
	for _, c := range []struct {
		mode  hearth.Mode
		w     hearth.Watts
		block []uint16
		state float64
	}{
		{hearth.ModePower, -2000, []uint16{1, 0, 30000, 0, 32000, 2, 250, 0, 300}, -2000},
		{hearth.ModePower, 1500, []uint16{1, 0, 33500, 0, 32000, 2, 25, 0, 300}, 1500},
		{hearth.ModePower, 0, []uint16{1, 0, 32000, 0, 32000, 2, 125, 0, 300}, 0},
		{hearth.ModeAuto, 0, []uint16{0, 0, 32000, 0, 32000, 2, 125, 0, 300}, rigLoadW},
	} {
		before := len(r.sim.Writes())
		reqs := r.bus.Stats().Requests
		r.clock.Advance(2 * time.Minute) // past the write budget's pace
		r.apply(t, c.mode, c.w)
		ws := r.sim.Writes()[before:]
		if len(ws) != 1 || ws[0].Func != 0x10 || ws[0].Addr != 0x0880 || !slices.Equal(ws[0].Values, c.block) {
			t.Fatalf("%s %v W wrote %+v, want one FC 16 of 0x0880: %v", c.mode, c.w, ws, c.block)
		}
		want := uint64(2) // the block and its read back
		if c.mode == hearth.ModeAuto {
			want = 3 // the block read first, as the release writes start only
		}
		if n := r.bus.Stats().Requests - reqs; n != want {
			t.Fatalf("%s %v W cost %d requests, want %d", c.mode, c.w, n, want)
		}
		r.follows(t, fmt.Sprintf("%s %v W", c.mode, c.w), c.state)
	}
}
