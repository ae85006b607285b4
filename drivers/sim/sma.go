package sim

import (
	"math"
	"time"
)

// SMA Sunny Tripower Smart Energy / Sunny Boy Storage, from SMA's own
// documents: SMA_Modbus-TI-en-15 (the Modbus interface: unit id 3, FC 03
// and 04 both serve the 3xxxx measurements, big-endian 32-bit values,
// NaN for a register without a value, the grid management services of
// section 5.4.3) and SMA_Modbus-TI-en-28, sheet SBS2.5-1VL-40 (type and
// access of each register). Behaviour users report is from evcc #15294,
// #15881 and #17115 and Tinkerforge's sma.py.
//
// The battery command is the battery management system's operating mode
// 40236 (U32: 303 off, 308 on, 1438 automatic, 2289 charge the battery,
// 2290 discharge it, 2424 default) with 40793/40795 minimum and maximum
// battery charge power, 40797/40799 minimum and maximum discharge power
// and 40801 the grid exchange setpoint (U32 W). SMA takes it only as the
// complete set: all six written, each within 60 s of the others (TI-15
// 5.4.3); a part is stored and changes nothing until the rest follows.
// In 2289 the battery charges at the maximum charge power, in 2290
// discharges at the maximum discharge power; in 2424 (and 308, 1438) the
// inverter runs its own self-consumption inside the window the limits
// give (all 0: the battery stands by), in 303 the battery is off. The set
// lapses unless renewed within 300 s (Tinkerforge, evcc #17115) and the
// inverter returns to its own management. These registers are write-only
// (WO): they read NaN. They are device control objects that may be
// written cyclically (TI-15 2.3): no flash is counted. 40149–40154 (the
// active power setpoint via system control and its switch) are accepted
// and, as on the SBS firmware users report (evcc #15294, #15881), change
// nothing. A write that does not start and end on a register's boundary
// gets exception 2, a mode outside the list exception 3 (TI-15 6).
//
// Read: SoC 30845 (U32 %), power drawn from the grid 30865 and fed in
// 30867 (S32 W, each never negative), present battery charge 31393 and
// discharge 31395 (U32 W, one of them 0), AC power 30775 (S32 W),
// device class 30051 (8007 battery inverter), device type 30053,
// condition 30201 (307 ok), battery operating status 30955 (2291
// standby, 2292 charging, 2293 discharging).
const (
	smaWSpt    = 40149 // S32, WO
	smaWCtl    = 40151 // U32, WO: 802 active, 803 inactive
	smaVArSpt  = 40153 // S32, WO
	smaMode    = 40236
	smaChaMin  = 40793
	smaChaMax  = 40795
	smaDschMin = 40797
	smaDschMax = 40799
	smaGridSpt = 40801
	smaRenew   = 300 * time.Second
	smaSetSpan = 60 * time.Second
)

// smaSet are the registers (first of each pair) SMA takes only together.
var smaSet = []uint16{smaMode, smaChaMin, smaChaMax, smaDschMin, smaDschMax, smaGridSpt}

// smaPairs are the writable 32-bit registers, by their first address,
// true for a signed one (NaN 0x8000 0000, else 0xFFFF FFFF).
var smaPairs = map[uint16]bool{smaWSpt: true, smaWCtl: false, smaVArSpt: true,
	smaMode: false, smaChaMin: false, smaChaMax: false, smaDschMin: false, smaDschMax: false, smaGridSpt: true}

// smaPairOf returns the first register of the writable pair a is in.
func smaPairOf(a uint16) (uint16, bool) {
	if _, ok := smaPairs[a]; ok {
		return a, true
	}
	if _, ok := smaPairs[a-1]; ok {
		return a - 1, true
	}
	return 0, false
}

var smaKind = &vendorKind{
	unit:        3,
	holdRanges:  [][2]uint16{{30001, 31999}, {40001, 41999}},
	inputRanges: [][2]uint16{{30001, 31999}},
	outOfRange:  ExceptionIllegalDataValue,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		_, ok := smaPairOf(a)
		return ok, true // judged whole by check
	},
	check: func(v *Vendor, addr uint16, vals []uint16) byte {
		end := addr + uint16(len(vals))
		if _, ok := smaPairs[addr]; !ok || len(vals)%2 != 0 {
			return ExceptionIllegalDataAddress
		}
		if _, ok := smaPairs[end-2]; !ok {
			return ExceptionIllegalDataAddress
		}
		if m, ok := u32AfterBE(v, addr, vals, smaMode); ok {
			switch m {
			case 303, 308, 1438, 2289, 2290, 2424:
			default:
				return ExceptionIllegalDataValue
			}
		}
		return 0
	},
	flash: func(uint16) bool { return false },
	written: func(v *Vendor, now time.Time, addr uint16, n int) {
		for _, a := range smaSet {
			if touches(addr, n, a) {
				v.marks[a] = now
			}
		}
		for _, a := range smaSet {
			if t, ok := v.marks[a]; !ok || now.Sub(t) > smaSetSpan {
				return // not the complete set (yet): nothing changes
			}
		}
		clear(v.marks)
		smaTake(v)
		v.deadline = now.Add(smaRenew)
	},
	revert: func(v *Vendor) {
		v.forced, v.forceW = false, 0
		clear(v.marks)
	},
	render: func(v *Vendor) {
		grid := v.cfg.PVW + v.batt - v.cfg.LoadW
		status := uint32(2291)
		switch {
		case v.batt < 0:
			status = 2292
		case v.batt > 0:
			status = 2293
		}
		for _, bank := range []map[uint16]uint16{v.hold, v.input} {
			put32(bank, 30051, 8007, false)
			put32(bank, 30053, 9326, false)
			put32(bank, 30201, 307, false)
			put32(bank, 30775, uint32(int32(math.Round(v.cfg.PVW+v.batt))), false)
			put32(bank, 30845, uint32(math.Round(v.soc())), false)
			put32(bank, 30865, uint32(math.Round(math.Max(0, -grid))), false)
			put32(bank, 30867, uint32(math.Round(math.Max(0, grid))), false)
			put32(bank, 30955, status, false)
			put32(bank, 31393, uint32(math.Round(math.Max(0, -v.batt))), false)
			put32(bank, 31395, uint32(math.Round(math.Max(0, v.batt))), false)
		}
	},
	readAs: func(v *Vendor, fc byte, a uint16) (uint16, bool) {
		if p, ok := smaPairOf(a); ok {
			if smaPairs[p] && a == p {
				return 0x8000, true // S32 NaN, high word
			}
			if smaPairs[p] {
				return 0, true
			}
			return 0xFFFF, true
		}
		bank := v.hold
		if fc == fcReadInput {
			bank = v.input
		}
		if _, ok := bank[a]; !ok {
			return 0xFFFF, true // no value: NaN
		}
		return 0, false
	},
	quirks: map[string]string{
		"standby": "takes the complete set and holds the battery in standby (0 W) in 2289 and 2290, as users of STP SE firmware report (evcc #17115)",
	},
}

// smaTake runs the battery command the complete set holds.
func smaTake(v *Vendor) {
	mode := get32(v.hold, smaMode, false)
	chaMax := float64(get32(v.hold, smaChaMax, false))
	dschMax := float64(get32(v.hold, smaDschMax, false))
	v.forced = true
	switch mode {
	case 2289:
		v.forceW = -chaMax
	case 2290:
		v.forceW = dschMax
	case 303:
		v.forceW = 0
	default: // 2424, 308, 1438: the inverter's own logic inside the window
		v.forceW = math.Max(-chaMax, math.Min(dschMax, v.cfg.LoadW-v.cfg.PVW))
	}
	if v.cfg.Quirk == "standby" && (mode == 2289 || mode == 2290) {
		v.forceW = 0
	}
}

// u32AfterBE is u32After for a value stored high word first.
func u32AfterBE(v *Vendor, addr uint16, vals []uint16, a uint16) (uint32, bool) {
	u, ok := u32After(v, addr, vals, a)
	return u<<16 | u>>16, ok
}
