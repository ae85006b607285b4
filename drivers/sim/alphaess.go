package sim

import (
	"math"
	"time"
)

// Alpha ESS SMILE / STORION (Alpha ESS "Modbus RTU - STORION SMILE + T30"
// V1.23; Tinkerforge alpha_ess.py; Alpha2MQTT). Unit 85 (0x55), holding
// registers, big-endian. The dispatch block 0x0880–0x0888: start (1 start,
// 0 stop), active power (4 bytes, 32000 + W: below 32000 the battery
// charges, above it discharges), reactive power (same offset), mode (2
// state-of-charge control: the battery runs at the active power until it
// reaches the target SoC), target SoC (0.4 %), time (4 bytes, s). A
// dispatch runs for its time and then the system returns to its own
// logic (start reads 0). Other dispatch modes are not simulated: the
// system keeps its own logic. A power beyond the battery's rating, a mode
// outside 1–10 or 19 (Tinkerforge's "no battery charge"), a start other
// than 0 or 1, or a SoC above 250 (100 %) gets exception 3 (a power
// written one word at a time is judged as the pair would hold it). A write-single
// (FC 06) request changes nothing and gets no answer, as Alpha2MQTT's
// author found on a SMILE-B3: registers are written with FC 16. Where the
// block is kept is not published: every write to it is counted. Read:
// grid meter total active power 0x0021 (S32 W, positive importing), SoC
// 0x0102 (0.1 %), battery power 0x0126 (S16 W, positive discharging).
const (
	aeStart  = 0x0880
	aePower  = 0x0881
	aeVAr    = 0x0883
	aeMode   = 0x0885
	aeSoC    = 0x0886
	aeTime   = 0x0887
	aeOffset = 32000
)

var alphaessKind = &vendorKind{
	unit:       0x55,
	holdRanges: [][2]uint16{{0x0021, 0x0022}, {0x0102, 0x0102}, {0x0126, 0x0126}, {aeStart, aeTime + 1}},
	outOfRange: ExceptionIllegalDataValue,
	valid: func(v *Vendor, a, x uint16) (bool, bool) {
		switch a {
		case aeStart:
			return true, x <= 1
		case aeMode:
			return true, (x >= 1 && x <= 10) || x == 19
		case aeSoC:
			return true, x <= 250
		case aePower, aePower + 1, aeVAr, aeVAr + 1, aeTime, aeTime + 1:
			return true, true // judged whole by check
		}
		return false, false
	},
	check: func(v *Vendor, addr uint16, vals []uint16) byte {
		if p, ok := u32AfterBE(v, addr, vals, aePower); ok {
			w := float64(int32(p)) - aeOffset
			if w > v.cfg.MaxDischargeW || -w > v.cfg.MaxChargeW {
				return ExceptionIllegalDataValue
			}
		}
		return 0
	},
	flash: func(a uint16) bool { return a >= aeStart && a <= aeTime+1 },
	written: func(v *Vendor, now time.Time, addr uint16, n int) {
		if int(addr)+n <= aeStart || addr > aeTime+1 {
			return
		}
		v.forced, v.forceW, v.deadline = false, 0, time.Time{}
		if v.hold[aeStart] != 1 || v.hold[aeMode] != 2 {
			return
		}
		w := float64(int32(get32(v.hold, aePower, false))) - aeOffset
		target := float64(v.hold[aeSoC]) * 0.4
		if (w < 0 && v.soc() >= target) || (w > 0 && v.soc() <= target) {
			w = 0 // the target SoC is reached
		}
		v.forced, v.forceW = true, w
		if t := get32(v.hold, aeTime, false); t > 0 {
			v.deadline = now.Add(time.Duration(t) * time.Second)
		}
	},
	revert: func(v *Vendor) { v.hold[aeStart] = 0 },
	render: func(v *Vendor) {
		h := v.hold
		put32(h, 0x0021, uint32(int32(math.Round(v.cfg.LoadW-v.cfg.PVW-v.batt))), false)
		h[0x0102] = uint16(math.Round(v.soc() * 10))
		h[0x0126] = uint16(int16(math.Round(v.batt)))
	},
	factory:     map[uint16]uint16{aePower + 1: aeOffset, aeVAr + 1: aeOffset, aeMode: 2},
	ignoresFC06: true,
}
