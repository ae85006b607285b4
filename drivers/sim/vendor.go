package sim

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// VendorConfig configures a Vendor. Zero fields take defaults.
type VendorConfig struct {
	// Profile names the vendor map served: see VendorProfiles.
	Profile       string
	UnitID        uint8 // 0: the vendor's usual unit id
	CapacityWh    float64
	MaxChargeW    float64
	MaxDischargeW float64
	InitialSoC    float64 // percent; 0 means 50
	PVW, LoadW    float64 // constant PV production and house load
	// Settings are holding registers the installer set, served from the
	// start (SolarEdge 0xE004 = 4, say); they override the factory values.
	Settings map[uint16]uint16
	// Quirk names a firmware behaviour users of the vendor report, served
	// instead of the documented one: see VendorQuirks. "": none.
	Quirk  string
	Now    func() time.Time
	Logger *slog.Logger
}

// Vendor simulates a hybrid inverter and battery speaking one vendor's own
// Modbus map, written from the vendor's public documents and the
// integrations that drive it (docs/devices.md lists them), not from
// hearth's profiles. Each vendor keeps the behaviour that trips a naive
// agent: values out of range refused with the vendor's exception, device
// timeouts, SolarEdge ignoring commands unless remote control is set up,
// Huawei's forcible period in minutes. Writes to registers the vendor may
// keep in flash are counted (FlashWrites). Physics is lazy on the injected
// clock, as in Simulator. Its methods are safe for concurrent use.
type Vendor struct {
	cfg  VendorConfig
	kind *vendorKind
	log  *slog.Logger

	mu       sync.Mutex
	hold     map[uint16]uint16
	input    map[uint16]uint16
	last     time.Time
	energyWh float64
	batt     float64 // positive discharging
	// The forced command, when the vendor's registers hold one.
	forced   bool
	forceW   float64
	deadline time.Time // zero: the command holds until told otherwise
	// marks are when registers of a set the vendor takes only whole were
	// last written (SMA's battery command), by the set's first register.
	marks   map[uint16]time.Time
	reverts int
	flash   int
	writes  []Write
}

// VendorState is a snapshot of a Vendor.
type VendorState struct {
	Time     time.Time
	SoCPct   float64
	BatteryW hearth.Watts // positive discharging
	GridW    hearth.Watts // positive exporting
	// Forced says the vendor's registers hold a command; CommandW is it.
	Forced   bool
	CommandW hearth.Watts
	// Reverts counts commands the device's own timeout dropped.
	Reverts int
	// FlashWrites counts write requests that touched a register the
	// vendor keeps, or may keep, in flash.
	FlashWrites int
}

// vendorKind is one vendor's map and behaviour.
type vendorKind struct {
	unit uint8
	// readable are the register ranges served, [from, to] inclusive.
	holdRanges, inputRanges [][2]uint16
	// valid says whether a value may be written to a holding register;
	// a register it does not know is not writable.
	valid      func(v *Vendor, addr, val uint16) (known, ok bool)
	outOfRange byte // the exception a value out of range gets
	// check, when set, judges a whole write (values spanning registers,
	// such as a float): the exception code, or 0.
	check func(v *Vendor, addr uint16, vals []uint16) byte
	flash func(addr uint16) bool
	// written runs after an accepted write: the device takes up what its
	// registers now say.
	written func(v *Vendor, now time.Time, addr uint16, n int)
	// revert is what the device does when its timeout lapses.
	revert func(v *Vendor)
	// render puts the state into the registers.
	render func(v *Vendor)
	// factory are the holding values at first start.
	factory map[uint16]uint16
	// readAs, when set, gives what a register reads instead of what the
	// bank holds (ok true): NaN for a write-only register or one with no
	// value, as SMA answers.
	readAs func(v *Vendor, fc byte, a uint16) (uint16, bool)
	// quirks are the firmware behaviours Quirk may name, each described.
	quirks map[string]string
	// ignoresFC06 says a write-single request is neither applied nor
	// answered (Alpha ESS, as Alpha2MQTT found on a SMILE-B3).
	ignoresFC06 bool
}

var vendorKinds = map[string]*vendorKind{
	"sungrow_sh":         sungrowKind,
	"solaredge_storedge": solaredgeKind,
	"huawei_sun2000":     huaweiKind,
	"goodwe_et":          goodweKind,
	"kostal_plenticore":  kostalKind,
	"sma_storage":        smaKind,
	"alphaess":           alphaessKind,
}

// VendorProfiles lists the vendor maps NewVendor serves.
func VendorProfiles() []string {
	var out []string
	for k := range vendorKinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// VendorQuirks lists the quirks a vendor's simulator serves, by name,
// each described.
func VendorQuirks(profile string) map[string]string {
	k, ok := vendorKinds[profile]
	if !ok {
		return nil
	}
	return k.quirks
}

// VendorUnit returns the unit id the vendor of profile answers by default
// (a Vendor's when VendorConfig.UnitID is 0); ok is false for a profile
// NewVendor does not serve.
func VendorUnit(profile string) (unit uint8, ok bool) {
	k, ok := vendorKinds[profile]
	if !ok {
		return 0, false
	}
	return k.unit, true
}

// NewVendor returns a simulator for cfg.Profile.
func NewVendor(cfg VendorConfig) (*Vendor, error) {
	k, ok := vendorKinds[cfg.Profile]
	if !ok {
		return nil, fmt.Errorf("no simulated vendor %q (have %s)", cfg.Profile, strings.Join(VendorProfiles(), ", "))
	}
	if cfg.UnitID == 0 {
		cfg.UnitID = k.unit
	}
	if _, ok := k.quirks[cfg.Quirk]; cfg.Quirk != "" && !ok {
		var names []string
		for n := range k.quirks {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%s: no quirk %q (have %s)", cfg.Profile, cfg.Quirk, strings.Join(names, ", "))
	}
	def := func(p *float64, d float64) {
		if *p <= 0 || math.IsNaN(*p) {
			*p = d
		}
	}
	def(&cfg.CapacityWh, DefaultCapacityWh)
	def(&cfg.MaxChargeW, DefaultMaxChargeW)
	def(&cfg.MaxDischargeW, DefaultMaxDischargeW)
	def(&cfg.InitialSoC, DefaultInitialSoC)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	v := &Vendor{cfg: cfg, kind: k, log: cfg.Logger, hold: map[uint16]uint16{}, input: map[uint16]uint16{}, marks: map[uint16]time.Time{},
		energyWh: min(cfg.InitialSoC, 100) / 100 * cfg.CapacityWh, last: cfg.Now()}
	for a, x := range k.factory {
		v.hold[a] = x
	}
	for a, x := range cfg.Settings {
		v.hold[a] = x
	}
	v.batt = v.target()
	k.render(v)
	return v, nil
}

// Unit returns the unit id served.
func (v *Vendor) Unit() uint8 { return v.cfg.UnitID }

// State returns the simulation state at the clock's now.
func (v *Vendor) State() VendorState {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.step()
	return VendorState{Time: now, SoCPct: v.soc(), BatteryW: hearth.Watts(v.batt),
		GridW: hearth.Watts(v.cfg.PVW + v.batt - v.cfg.LoadW), Forced: v.forced, CommandW: hearth.Watts(v.forceW),
		Reverts: v.reverts, FlashWrites: v.flash}
}

// SetSoC sets the battery's state of charge in percent, clamped to 0–100.
// Physics carries on from there.
func (v *Vendor) SetSoC(pct float64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.step()
	v.energyWh = min(max(pct, 0), 100) / 100 * v.cfg.CapacityWh
	v.batt = v.target()
	v.kind.render(v)
}

// SetHolding sets holding registers as an installer would on the device's
// own menu; it counts as no Modbus write.
func (v *Vendor) SetHolding(addr uint16, vals ...uint16) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.step()
	for i, x := range vals {
		v.hold[addr+uint16(i)] = x
	}
	v.kind.written(v, now, addr, len(vals))
	v.batt = v.target()
	v.kind.render(v)
}

// Holding returns holding registers as the device holds them.
func (v *Vendor) Holding(addr uint16, n int) []uint16 {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.step()
	return regsOf(v.hold, addr, n)
}

// Writes returns a copy of the write log, oldest first.
func (v *Vendor) Writes() []Write {
	v.mu.Lock()
	defer v.mu.Unlock()
	return cloneWrites(v.writes)
}

// ServeTCP serves Modbus TCP on ln until ctx ends (see Simulator.ServeTCP).
func (v *Vendor) ServeTCP(ctx context.Context, ln net.Listener) error {
	v.log.Info("modbus tcp listening", "addr", ln.Addr().String(), "unit", v.cfg.UnitID, "profile", v.cfg.Profile)
	return serveTCP(ctx, ln, v.log, v.serve)
}

func (v *Vendor) soc() float64 { return v.energyWh / v.cfg.CapacityWh * 100 }

// target is the battery power the device runs now: the forced command, or
// self-consumption (cover the load PV does not), within the battery's
// limits and charge.
func (v *Vendor) target() float64 {
	w := v.cfg.LoadW - v.cfg.PVW
	if v.forced {
		w = v.forceW
	}
	w = math.Max(-v.cfg.MaxChargeW, math.Min(v.cfg.MaxDischargeW, w))
	if (w > 0 && v.energyWh <= 0) || (w < 0 && v.energyWh >= v.cfg.CapacityWh) {
		return 0
	}
	return w
}

// step integrates to the clock's now, dropping a command whose device
// timeout lapsed on the way. Callers hold v.mu.
func (v *Vendor) step() time.Time {
	now := v.cfg.Now()
	if v.forced && !v.deadline.IsZero() && !now.Before(v.deadline) {
		v.integrate(v.deadline)
		v.forced, v.deadline = false, time.Time{}
		v.reverts++
		v.kind.revert(v)
		v.batt = v.target()
	}
	v.integrate(now)
	v.kind.render(v)
	return now
}

func (v *Vendor) integrate(t time.Time) {
	if !t.After(v.last) {
		return
	}
	h := t.Sub(v.last).Hours()
	v.energyWh = math.Max(0, math.Min(v.cfg.CapacityWh, v.energyWh-v.batt*h))
	v.last = t
	v.batt = v.target()
}

// serve executes one request (function codes 3, 4, 6 and 16).
func (v *Vendor) serve(_ context.Context, unit uint8, pdu []byte) ([]byte, action) {
	if unit != v.cfg.UnitID || len(pdu) == 0 || (v.kind.ignoresFC06 && pdu[0] == fcWriteSingle) {
		return nil, actSilent
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.step()
	return execPDU(pdu, v.read, func(fc byte, addr uint16, vals []uint16) byte {
		return v.write(now, fc, addr, vals)
	}), actRespond
}

// read returns n holding (FC 3) or input (FC 4) registers at addr, or
// exception 2 when the vendor's map does not serve them all. Callers hold
// v.mu.
func (v *Vendor) read(fc byte, addr, n uint16) ([]uint16, byte) {
	bank, ranges := v.hold, v.kind.holdRanges
	if fc == fcReadInput {
		bank, ranges = v.input, v.kind.inputRanges
	}
	if !inRanges(ranges, addr, n) {
		return nil, ExceptionIllegalDataAddress
	}
	out := regsOf(bank, addr, int(n))
	if v.kind.readAs != nil {
		for i := range out {
			if x, ok := v.kind.readAs(v, fc, addr+uint16(i)); ok {
				out[i] = x
			}
		}
	}
	return out, 0
}

// write checks a write all or nothing, applies and logs it. Callers hold
// v.mu.
func (v *Vendor) write(now time.Time, fc byte, addr uint16, vals []uint16) byte {
	var code byte
	flash := false
	for i, x := range vals {
		a := addr + uint16(i)
		known, ok := v.kind.valid(v, a, x)
		switch {
		case !known:
			code = ExceptionIllegalDataAddress
		case !ok && code == 0:
			code = v.kind.outOfRange
		}
		flash = flash || v.kind.flash(a)
	}
	if code == 0 && v.kind.check != nil {
		code = v.kind.check(v, addr, vals)
	}
	v.writes = appendBounded(v.writes, Write{Time: now, Unit: v.cfg.UnitID, Func: fc, Addr: addr, Values: append([]uint16(nil), vals...), Exception: code}, maxWriteLog)
	if code != 0 {
		return code
	}
	if flash {
		v.flash++
	}
	for i, x := range vals {
		v.hold[addr+uint16(i)] = x
	}
	v.kind.written(v, now, addr, len(vals))
	v.batt = v.target()
	v.kind.render(v)
	return 0
}

func inRanges(rs [][2]uint16, addr, n uint16) bool {
	end := int(addr) + int(n) - 1
	for _, r := range rs {
		if addr >= r[0] && end <= int(r[1]) {
			return true
		}
	}
	return false
}

// regsOf returns n registers of bank from addr.
func regsOf(bank map[uint16]uint16, addr uint16, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = bank[addr+uint16(i)]
	}
	return out
}

// touches reports whether a write of n registers at addr covers a.
func touches(addr uint16, n int, a uint16) bool { return a >= addr && int(a) < int(addr)+n }

// put32 stores a 32-bit value at a, high word first or low word first.
func put32(bank map[uint16]uint16, a uint16, x uint32, lowFirst bool) {
	hi, lo := uint16(x>>16), uint16(x)
	if lowFirst {
		hi, lo = lo, hi
	}
	bank[a], bank[a+1] = hi, lo
}

// get32 reads a 32-bit value stored by put32.
func get32(bank map[uint16]uint16, a uint16, lowFirst bool) uint32 {
	hi, lo := bank[a], bank[a+1]
	if lowFirst {
		hi, lo = lo, hi
	}
	return uint32(hi)<<16 | uint32(lo)
}
