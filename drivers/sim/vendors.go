package sim

import (
	"math"
	"time"
)

// Sungrow SH hybrid (Communication Protocol of Residential Hybrid Inverter
// V1.0.20; mkaiser's Home Assistant map; evcc sungrow-hybrid). Input
// registers carry the state, 32-bit values low word first; holding
// 13049 EMS mode (0 self-consumption, 2 forced), 13050 command (0xAA
// charge, 0xBB discharge, 0xCC stop), 13051 forced power in W. A value
// outside the model's range is refused with exception 4 (server device
// failure), as users of the device report. There is no device-side
// timeout: a forced command holds until the EMS mode is set back. Battery
// power 13021 is a magnitude, its direction in the power-flow bits of
// 13000 (bit 1 charging, bit 2 discharging), as on older firmware.
const (
	sgEMSMode  = 13049
	sgForceCmd = 13050
	sgForceW   = 13051
	sgCharge   = 0xAA
	sgDisch    = 0xBB
	sgStop     = 0xCC
)

var sungrowKind = &vendorKind{
	unit:        1,
	holdRanges:  [][2]uint16{{13049, 13051}},
	inputRanges: [][2]uint16{{4999, 5100}, {12999, 13100}},
	outOfRange:  ExceptionServerFailure,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		switch a {
		case sgEMSMode:
			return true, x == 0 || x == 2
		case sgForceCmd:
			return true, x == sgCharge || x == sgDisch || x == sgStop
		case sgForceW:
			return true, float64(x) <= math.Max(v.cfg.MaxChargeW, v.cfg.MaxDischargeW)
		}
		return false, false
	},
	flash: func(a uint16) bool { return a >= sgEMSMode && a <= sgForceW },
	written: func(v *Vendor, _ time.Time, _ uint16, _ int) {
		v.forced = v.hold[sgEMSMode] == 2
		p := float64(v.hold[sgForceW])
		switch v.hold[sgForceCmd] {
		case sgCharge:
			v.forceW = -p
		case sgDisch:
			v.forceW = p
		default:
			v.forceW = 0
		}
	},
	revert: func(*Vendor) {},
	render: func(v *Vendor) {
		in := v.input
		in[5000] = uint16(math.Max(v.cfg.MaxChargeW, v.cfg.MaxDischargeW) / 100)
		put32(in, 5003, 12345, true)
		put32(in, 5016, uint32(v.cfg.PVW), true)
		in[5018], in[5019], in[5020] = 2301, 2299, 2302
		in[5034], in[5035] = 1000, 500
		state, bits := uint16(0x0040), uint16(0)
		if v.forced {
			state = 0x0800
		}
		if v.cfg.PVW > 0 {
			bits |= 1 << 0
		}
		switch {
		case v.batt < 0:
			bits |= 1 << 1
		case v.batt > 0:
			bits |= 1 << 2
		}
		grid := v.cfg.PVW + v.batt - v.cfg.LoadW
		switch {
		case grid > 0:
			bits |= 1 << 4
		case grid < 0:
			bits |= 1 << 5
		}
		in[12999], in[13000] = state, bits
		put32(in, 13009, uint32(int32(math.Round(grid))), true)
		in[13020] = uint16(int16(math.Round(v.batt / 400 * 10))) // 400 V pack, 0.1 A
		in[13021] = uint16(math.Round(math.Abs(v.batt)))
		in[13022] = uint16(math.Round(v.soc() * 10))
		put32(in, 13026, 4000, true)
		put32(in, 13033, uint32(int32(math.Round(v.cfg.PVW+v.batt))), true)
		put32(in, 13036, 7000, true)
		put32(in, 13040, 4500, true)
		put32(in, 13045, 9000, true)
	},
	factory: map[uint16]uint16{sgEMSMode: 0, sgForceCmd: sgStop, sgForceW: 0},
}

// SolarEdge StorEdge (SolarEdge storage control block 0xE000, as driven by
// evcc solaredge-hybrid, OpenEMS PR #3571 and solaredge-modbus-multi).
// 32-bit values and floats low word first. 0xE004 StorageConf_CtrlMode
// must be 4 (remote control) for the remote commands to act: otherwise
// they are stored and ignored. 0xE005 AC charge policy 1 lets it charge
// from the grid (else only from PV). 0xE00A is the default command mode
// the device returns to when 0xE00B (timeout, s) passes without a write to
// the remote-control block 0xE00B–0xE011; 0xE00D is the command mode (3
// charge from PV and AC, 4 discharge to maximise export, 7 maximise
// self-consumption, 0 off), 0xE00E charge limit and 0xE010 discharge limit
// (float32 W). Battery 1 power 0xE174 (float32, positive charging) and
// state of energy 0xE184 (float32 %). Every register of the block may be
// kept in flash (SolarEdge's warning): all are counted. Values out of
// range get exception 3: the timeout above 86400 s, a limit negative or
// not a number, whether a write carries both words of the value or one.
const (
	seCtrlMode   = 0xE004
	seACCharge   = 0xE005
	seDefault    = 0xE00A
	seTimeout    = 0xE00B
	seCmdMode    = 0xE00D
	seChargeLim  = 0xE00E
	seDischLim   = 0xE010
	seBattPower  = 0xE174
	seBattSoE    = 0xE184
	seMaxTimeout = 86400
)

// holdFloat returns the float32 (low word first) held at a.
func holdFloat(v *Vendor, a uint16) float64 {
	return float64(math.Float32frombits(get32(v.hold, a, true)))
}

var solaredgeKind = &vendorKind{
	unit:       1,
	holdRanges: [][2]uint16{{0xE000, 0xE011}, {0xE170, 0xE18F}},
	outOfRange: ExceptionIllegalDataValue,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		switch a {
		case seCtrlMode:
			return true, x <= 4
		case seACCharge:
			return true, x <= 3
		case seDefault, seCmdMode:
			return true, x <= 7 && x != 6
		case seTimeout, seTimeout + 1, seChargeLim, seChargeLim + 1, seDischLim, seDischLim + 1:
			return true, true // 32-bit values are judged whole by check, a word written alone with the other as held
		}
		return false, false
	},
	check: func(v *Vendor, addr uint16, vals []uint16) byte {
		for _, a := range []uint16{seChargeLim, seDischLim} {
			if w, ok := floatAfter(v, addr, vals, a); ok && (math.IsNaN(w) || w < 0 || w > 1e6) {
				return ExceptionIllegalDataValue
			}
		}
		if t, ok := u32After(v, addr, vals, seTimeout); ok && t > seMaxTimeout {
			return ExceptionIllegalDataValue
		}
		return 0
	},
	flash: func(a uint16) bool { return a >= 0xE000 && a <= 0xE011 },
	written: func(v *Vendor, now time.Time, addr uint16, n int) {
		if touches(addr, n, seTimeout) || touches(addr, n, seCmdMode) || touches(addr, n, seChargeLim) || touches(addr, n, seDischLim) {
			t := get32(v.hold, seTimeout, true)
			if t > 0 && t <= seMaxTimeout {
				v.deadline = now.Add(time.Duration(t) * time.Second)
			} else {
				v.deadline = time.Time{}
			}
		}
		seApply(v)
	},
	revert: func(v *Vendor) {
		v.hold[seCmdMode] = v.hold[seDefault]
		seApply(v)
		v.deadline = time.Time{}
	},
	render: func(v *Vendor) {
		put32(v.hold, seBattPower, math.Float32bits(float32(-v.batt)), true)
		put32(v.hold, seBattSoE, math.Float32bits(float32(v.soc())), true)
	},
	factory: map[uint16]uint16{seCtrlMode: 1, seACCharge: 0, seDefault: 7, seCmdMode: 7,
		seTimeout: 3600 & 0xFFFF, seTimeout + 1: 3600 >> 16},
}

// u32After returns the 32-bit value (low word first) the registers at a
// and a+1 hold once a write of vals at addr is applied, when the write
// touches either: a write of one word is judged with the other as held,
// so no value out of range gets in a word at a time. Callers hold v.mu.
func u32After(v *Vendor, addr uint16, vals []uint16, a uint16) (uint32, bool) {
	if !touches(addr, len(vals), a) && !touches(addr, len(vals), a+1) {
		return 0, false
	}
	word := func(r uint16) uint32 {
		if touches(addr, len(vals), r) {
			return uint32(vals[r-addr])
		}
		return uint32(v.hold[r])
	}
	return word(a+1)<<16 | word(a), true
}

// floatAfter is u32After for a float32.
func floatAfter(v *Vendor, addr uint16, vals []uint16, a uint16) (float64, bool) {
	u, ok := u32After(v, addr, vals, a)
	return float64(math.Float32frombits(u)), ok
}

// seApply takes up the command the registers hold: only under remote
// control (0xE004 = 4); charging takes the grid only with AC charge
// policy 1, else PV alone.
func seApply(v *Vendor) {
	keep := v.deadline
	v.forced, v.forceW = false, 0
	if v.hold[seCtrlMode] != 4 {
		return
	}
	chg, dis := holdFloat(v, seChargeLim), holdFloat(v, seDischLim)
	if math.IsNaN(chg) || chg < 0 || math.IsNaN(dis) || dis < 0 {
		return
	}
	switch v.hold[seCmdMode] {
	case 3:
		if v.hold[seACCharge] != 1 {
			chg = math.Min(chg, v.cfg.PVW)
		}
		v.forced, v.forceW = true, -chg
	case 4:
		v.forced, v.forceW = true, dis
	case 0:
		v.forced, v.forceW = true, 0
	}
	if !v.forced {
		keep = time.Time{}
	}
	v.deadline = keep
}

// Huawei SUN2000 hybrid with LUNA2000 (huawei-solar-lib registers.py; evcc
// huawei-sun2000-hybrid; wlcrs huawei_solar services). Holding registers,
// big-endian. 47100 forcible charge/discharge command (0 stop, 1 charge, 2
// discharge) starts a forced period of 47083 minutes (1–1440) at 47247
// (charge, U32 W) or 47249 (discharge, U32 W), in the duration setting
// mode 47246 = 0; when the period ends the battery returns to its working
// mode. Powers above the battery's rating and periods outside 1–1440 are
// refused with exception 3. Read: SoC 37760 (0.1 %), battery power 37765
// (I32 W, positive charging), grid 37113 (I32 W, positive exporting), PV
// input power 32064 (I32 W). These settings are not published as RAM:
// every control register is counted.
const (
	hwPeriod    = 47083
	hwCmd       = 47100
	hwSetMode   = 47246
	hwChargeW   = 47247
	hwDischW    = 47249
	hwSoC       = 37760
	hwBattPower = 37765
	hwGrid      = 37113
	hwPV        = 32064
)

var huaweiKind = &vendorKind{
	unit:       1,
	holdRanges: [][2]uint16{{32064, 32065}, {37113, 37114}, {37760, 37766}, {47083, 47083}, {47100, 47100}, {47246, 47250}},
	outOfRange: ExceptionIllegalDataValue,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		switch a {
		case hwPeriod:
			return true, x >= 1 && x <= 1440
		case hwCmd:
			return true, x <= 2
		case hwSetMode:
			return true, x <= 1
		case hwChargeW, hwDischW:
			return true, x == 0 // above 65535 W: no home battery
		case hwChargeW + 1:
			return true, float64(x) <= v.cfg.MaxChargeW
		case hwDischW + 1:
			return true, float64(x) <= v.cfg.MaxDischargeW
		}
		return false, false
	},
	flash: func(a uint16) bool { return a == hwPeriod || a == hwCmd || (a >= hwSetMode && a <= hwDischW+1) },
	written: func(v *Vendor, now time.Time, addr uint16, n int) {
		if !touches(addr, n, hwCmd) {
			return
		}
		v.forced, v.forceW, v.deadline = false, 0, time.Time{}
		if v.hold[hwSetMode] != 0 {
			return // target-SoC mode: not simulated
		}
		switch v.hold[hwCmd] {
		case 1:
			v.forced, v.forceW = true, -float64(get32(v.hold, hwChargeW, false))
		case 2:
			v.forced, v.forceW = true, float64(get32(v.hold, hwDischW, false))
		}
		if v.forced {
			v.deadline = now.Add(time.Duration(v.hold[hwPeriod]) * time.Minute)
		}
	},
	revert: func(v *Vendor) { v.hold[hwCmd] = 0 },
	render: func(v *Vendor) {
		h := v.hold
		h[hwSoC] = uint16(math.Round(v.soc() * 10))
		put32(h, hwBattPower, uint32(int32(math.Round(-v.batt))), false)
		put32(h, hwGrid, uint32(int32(math.Round(v.cfg.PVW+v.batt-v.cfg.LoadW))), false)
		put32(h, hwPV, uint32(int32(v.cfg.PVW)), false)
	},
	factory: map[uint16]uint16{hwPeriod: 120},
}

// GoodWe ET/EH/BT/BH hybrids (OpenEMS io.openems.edge.goodwe
// AbstractGoodWe and EmsPowerMode; marcelblijleven/goodwe et.py). Unit
// 247, holding registers, big-endian. 47511 EMS power mode and 47512 EMS
// power set (W), written together in one FC 16: 1 auto (self-use), 8
// battery standby (0 W), 11 charge the battery at 47512, 12 discharge it
// at 47512. No device-side timeout is published: a mode holds until
// changed. Battery power 35182 (S32, positive discharging), SoC 37007
// (%), meter total active power 36025 (S32, positive exporting). A mode
// or power out of range gets exception 3.
const (
	gwEMSMode  = 47511
	gwEMSPower = 47512
)

var goodweKind = &vendorKind{
	unit:       247,
	holdRanges: [][2]uint16{{35182, 35183}, {36025, 36026}, {37007, 37007}, {47511, 47512}},
	outOfRange: ExceptionIllegalDataValue,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		switch a {
		case gwEMSMode:
			return true, (x >= 1 && x <= 12) || x == 0xFF
		case gwEMSPower:
			return true, float64(x) <= math.Max(v.cfg.MaxChargeW, v.cfg.MaxDischargeW)
		}
		return false, false
	},
	flash: func(a uint16) bool { return a == gwEMSMode || a == gwEMSPower },
	written: func(v *Vendor, _ time.Time, _ uint16, _ int) {
		x := float64(v.hold[gwEMSPower])
		switch v.hold[gwEMSMode] {
		case 11:
			v.forced, v.forceW = true, -x
		case 12:
			v.forced, v.forceW = true, x
		case 8:
			v.forced, v.forceW = true, 0
		default:
			v.forced, v.forceW = false, 0
		}
	},
	revert: func(*Vendor) {},
	render: func(v *Vendor) {
		h := v.hold
		put32(h, 35182, uint32(int32(math.Round(v.batt))), false)
		put32(h, 36025, uint32(int32(math.Round(v.cfg.PVW+v.batt-v.cfg.LoadW))), false)
		h[37007] = uint16(math.Round(v.soc()))
	},
	factory: map[uint16]uint16{gwEMSMode: 1},
}

// Kostal Plenticore plus (Kostal "Interface description MODBUS (TCP) &
// SunSpec", as read by OpenEMS KostalManagedEssImpl and openWB's
// kostal_plenticore bat.py). Unit 71, port 1502, word order little
// (the inverter's default). 1034 is the battery charge power setpoint
// (float32 W, negative charging, positive discharging). It cannot be
// cleared: writing 0 holds the battery at 0 W; the setpoint lapses only
// when no write reaches 1026–1044 for the inverter's external-control
// timeout (an installer setting, 30 s by default), and the battery goes
// back to the inverter's own management. 582 is the actual battery power
// (S16, positive discharging) and 514 the SoC (%). A setpoint beyond the
// battery's rating or not a number gets exception 3.
const (
	koSetpoint = 1034
	koTimeout  = 30 * time.Second
)

var kostalKind = &vendorKind{
	unit:       71,
	holdRanges: [][2]uint16{{514, 514}, {582, 582}, {1026, 1045}},
	outOfRange: ExceptionIllegalDataValue,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		return a >= 1026 && a <= 1045, true // the float is judged whole by check, a word written alone with the other as held
	},
	check: func(v *Vendor, addr uint16, vals []uint16) byte {
		w, ok := floatAfter(v, addr, vals, koSetpoint)
		if ok && (math.IsNaN(w) || w > v.cfg.MaxDischargeW || -w > v.cfg.MaxChargeW) {
			return ExceptionIllegalDataValue
		}
		return 0
	},
	flash: func(uint16) bool { return false },
	written: func(v *Vendor, now time.Time, addr uint16, n int) {
		// Any write in 1026–1044 re-arms the timeout.
		if int(addr)+n <= 1026 || addr > 1044 {
			return
		}
		v.forced, v.forceW, v.deadline = true, holdFloat(v, koSetpoint), now.Add(koTimeout)
	},
	revert: func(*Vendor) {},
	render: func(v *Vendor) {
		v.hold[514] = uint16(math.Round(v.soc()))
		v.hold[582] = uint16(int16(math.Round(v.batt)))
	},
}
