package sim

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/clocktest"
)

func newTestVendor(t *testing.T, profile string, settings map[uint16]uint16) (*Vendor, *clocktest.Clock) {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC))
	v, err := NewVendor(VendorConfig{Profile: profile, LoadW: 400, Settings: settings, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v, clock
}

// writeRegs sends an FC 16 and returns the exception code, 0 when applied.
func writeRegs(v *Vendor, addr uint16, vals ...uint16) byte {
	pdu := []byte{fcWriteMultiple, byte(addr >> 8), byte(addr), 0, byte(len(vals)), byte(2 * len(vals))}
	for _, x := range vals {
		pdu = binary.BigEndian.AppendUint16(pdu, x)
	}
	resp, _ := v.serve(context.Background(), v.Unit(), pdu)
	if resp[0]&0x80 != 0 {
		return resp[1]
	}
	return 0
}

func lowFirstFloat(f float32) (uint16, uint16) {
	b := math.Float32bits(f)
	return uint16(b), uint16(b >> 16)
}

// TestSolarEdgeIgnoresCommandsWithoutRemoteControl: the block is stored
// and counted, and changes nothing until 0xE004 is 4.
func TestSolarEdgeIgnoresCommandsWithoutRemoteControl(t *testing.T) {
	t.Parallel()
	v, _ := newTestVendor(t, "solaredge_storedge", map[uint16]uint16{0xE005: 1})
	lo, hi := lowFirstFloat(2000)
	block := []uint16{60, 0, 4, 0, 0, lo, hi}
	if code := writeRegs(v, 0xE00B, block...); code != 0 {
		t.Fatalf("exception %d", code)
	}
	if st := v.State(); st.Forced || st.BatteryW != 400 || st.FlashWrites != 1 {
		t.Fatalf("without remote control: %+v, want self-consumption (400 W) and one flash-class write", st)
	}
	v.SetHolding(0xE004, 4)
	if code := writeRegs(v, 0xE00B, block...); code != 0 || v.State().BatteryW != 2000 {
		t.Fatalf("with remote control: exception %d, state %+v, want 2000 W discharging", code, v.State())
	}
}

// TestHuaweiPeriodIsMinutes: a period of 2 holds the command two minutes,
// not two seconds; 0 is refused.
func TestHuaweiPeriodIsMinutes(t *testing.T) {
	t.Parallel()
	v, clock := newTestVendor(t, "huawei_sun2000", nil)
	if code := writeRegs(v, hwPeriod, 0); code != ExceptionIllegalDataValue {
		t.Fatalf("period 0: exception %d, want 3", code)
	}
	writeRegs(v, hwPeriod, 2)
	writeRegs(v, hwDischW, 0, 1500)
	writeRegs(v, hwCmd, 2)
	clock.Advance(119 * time.Second)
	if st := v.State(); st.BatteryW != 1500 {
		t.Fatalf("after 119 s: %+v, want 1500 W", st)
	}
	clock.Advance(2 * time.Second)
	if st := v.State(); st.Forced || st.Reverts != 1 || st.BatteryW != 400 {
		t.Fatalf("after 121 s: %+v, want reverted to self-consumption", st)
	}
}

// TestKostalSetpointLapsesButCannotBeCleared: writing 0 holds 0 W; only
// 30 s without a write hands the battery back.
func TestKostalSetpointLapsesButCannotBeCleared(t *testing.T) {
	t.Parallel()
	v, clock := newTestVendor(t, "kostal_plenticore", nil)
	lo, hi := lowFirstFloat(-1800)
	writeRegs(v, koSetpoint, lo, hi)
	if st := v.State(); st.BatteryW != -1800 {
		t.Fatalf("%+v, want -1800 W", st)
	}
	lo, hi = lowFirstFloat(0)
	writeRegs(v, koSetpoint, lo, hi)
	clock.Advance(29 * time.Second)
	if st := v.State(); !st.Forced || st.BatteryW != 0 {
		t.Fatalf("0 written 29 s ago: %+v, want held at 0 W", st)
	}
	clock.Advance(2 * time.Second)
	if st := v.State(); st.Forced || st.BatteryW != 400 {
		t.Fatalf("31 s without a write: %+v, want the inverter's own management", st)
	}
}

// TestSungrowRefusesOutOfRangeWithException4 and holds a forced command
// with no timeout.
func TestSungrowRefusesOutOfRangeWithException4(t *testing.T) {
	t.Parallel()
	v, clock := newTestVendor(t, "sungrow_sh", nil)
	if code := writeRegs(v, sgForceW, 9000); code != ExceptionServerFailure {
		t.Fatalf("9000 W on a 5000 W model: exception %d, want 4", code)
	}
	if code := writeRegs(v, sgEMSMode, 2, sgCharge, 2500); code != 0 {
		t.Fatalf("exception %d", code)
	}
	clock.Advance(24 * time.Hour)
	if st := v.State(); !st.Forced || st.Reverts != 0 {
		t.Fatalf("a day later: %+v, want the forced command still held", st)
	}
}

// TestFloatsOutOfRangeAreRefused: a Kostal setpoint beyond the battery or
// not a number, and a negative SolarEdge limit, get exception 3 and
// change nothing.
func TestFloatsOutOfRangeAreRefused(t *testing.T) {
	t.Parallel()
	k, _ := newTestVendor(t, "kostal_plenticore", nil)
	for _, f := range []float32{9000, -9000, float32(math.NaN())} {
		lo, hi := lowFirstFloat(f)
		if code := writeRegs(k, koSetpoint, lo, hi); code != ExceptionIllegalDataValue || k.State().Forced {
			t.Fatalf("Kostal setpoint %v: exception %d, state %+v; want 3 and nothing forced", f, code, k.State())
		}
	}
	se, _ := newTestVendor(t, "solaredge_storedge", map[uint16]uint16{0xE004: 4, 0xE005: 1})
	lo, hi := lowFirstFloat(-500)
	if code := writeRegs(se, 0xE00B, 60, 0, 3, lo, hi, 0, 0); code != ExceptionIllegalDataValue || se.State().Forced {
		t.Fatalf("SolarEdge charge limit -500: exception %d, state %+v; want 3 and nothing forced", code, se.State())
	}
}

// readRegs sends an FC 03 or 04 and returns the registers, or the
// exception code.
func readRegs(v *Vendor, fc byte, addr, n uint16) ([]uint16, byte) {
	pdu := []byte{fc, byte(addr >> 8), byte(addr), byte(n >> 8), byte(n)}
	resp, _ := v.serve(context.Background(), v.Unit(), pdu)
	if resp[0]&0x80 != 0 {
		return nil, resp[1]
	}
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.BigEndian.Uint16(resp[2+2*i:])
	}
	return out, 0
}

// smaSetWrite writes SMA's battery command as hearth's profile does: the
// five limits in one FC 16, then the mode.
func smaSetWrite(t *testing.T, v *Vendor, mode, chaMin, chaMax, dschMin, dschMax uint16) {
	t.Helper()
	if code := writeRegs(v, smaChaMin, 0, chaMin, 0, chaMax, 0, dschMin, 0, dschMax, 0, 0); code != 0 {
		t.Fatalf("limits: exception %d", code)
	}
	if code := writeRegs(v, smaMode, 0, mode); code != 0 {
		t.Fatalf("mode %d: exception %d", mode, code)
	}
}

// TestSMATakesOnlyTheCompleteSet: the mode alone, or the limits alone,
// change nothing; the six registers within 60 s charge the battery; a
// part written more than 60 s after the rest waits for the rest; the
// command lapses 300 s after the last complete set.
func TestSMATakesOnlyTheCompleteSet(t *testing.T) {
	t.Parallel()
	v, clock := newTestVendor(t, "sma_storage", nil)
	if code := writeRegs(v, smaMode, 0, 2289); code != 0 {
		t.Fatalf("mode: exception %d", code)
	}
	if st := v.State(); st.Forced || st.BatteryW != 400 {
		t.Fatalf("mode alone: %+v, want the inverter's own logic (400 W)", st)
	}
	clock.Advance(61 * time.Second)
	writeRegs(v, smaChaMin, 0, 2000, 0, 2000, 0, 0, 0, 0, 0, 0)
	if st := v.State(); st.Forced || st.BatteryW != 400 {
		t.Fatalf("limits 61 s after the mode: %+v, want nothing taken", st)
	}
	writeRegs(v, smaMode, 0, 2289)
	if st := v.State(); !st.Forced || st.BatteryW != -2000 {
		t.Fatalf("complete set: %+v, want charging 2000 W", st)
	}
	clock.Advance(299 * time.Second)
	if st := v.State(); st.BatteryW != -2000 {
		t.Fatalf("299 s later: %+v, want still charging", st)
	}
	clock.Advance(2 * time.Second)
	if st := v.State(); st.Forced || st.Reverts != 1 || st.BatteryW != 400 {
		t.Fatalf("301 s without renewal: %+v, want back to the inverter's own logic", st)
	}
	smaSetWrite(t, v, 2290, 0, 0, 1500, 1500)
	if st := v.State(); st.BatteryW != 1500 {
		t.Fatalf("discharge set: %+v, want 1500 W", st)
	}
	smaSetWrite(t, v, 2424, 0, 0, 0, 0)
	if st := v.State(); st.BatteryW != 0 {
		t.Fatalf("default mode with every limit 0: %+v, want standby", st)
	}
	if st := v.State(); st.FlashWrites != 0 {
		t.Fatalf("%d flash-class writes: SMA's control objects are not flash", st.FlashWrites)
	}
}

// TestSMARegistersAsDocumented: the control registers read NaN (write-
// only), the measurements are served on FC 03 and 04 alike, big-endian,
// a register without a value reads NaN, a write that splits a 32-bit
// register gets exception 2 and a mode outside SMA's list exception 3.
func TestSMARegistersAsDocumented(t *testing.T) {
	t.Parallel()
	v, _ := newTestVendor(t, "sma_storage", nil)
	smaSetWrite(t, v, 2289, 1200, 1200, 0, 0)
	if got, code := readRegs(v, fcReadHolding, smaMode, 2); code != 0 || got[0] != 0xFFFF || got[1] != 0xFFFF {
		t.Fatalf("read 40236: %v exception %d, want U32 NaN", got, code)
	}
	if got, _ := readRegs(v, fcReadHolding, smaGridSpt, 2); got[0] != 0x8000 || got[1] != 0 {
		t.Fatalf("read 40801: %v, want S32 NaN", got)
	}
	for _, fc := range []byte{fcReadHolding, fcReadInput} {
		got, code := readRegs(v, fc, 31393, 4)
		if code != 0 || got[0] != 0 || got[1] != 1200 || got[2] != 0 || got[3] != 0 {
			t.Fatalf("FC %d 31393..31396: %v exception %d, want charge 1200 W, discharge 0", fc, got, code)
		}
	}
	if got, _ := readRegs(v, fcReadHolding, 30847, 2); got[0] != 0xFFFF || got[1] != 0xFFFF {
		t.Fatalf("a register without a value: %v, want NaN", got)
	}
	if code := writeRegs(v, smaMode+1, 2289); code != ExceptionIllegalDataAddress {
		t.Fatalf("write of 40237 alone: exception %d, want 2", code)
	}
	if code := writeRegs(v, smaMode, 0, 1234); code != ExceptionIllegalDataValue {
		t.Fatalf("mode 1234: exception %d, want 3", code)
	}
	if code := writeRegs(v, 30845, 0, 50); code != ExceptionIllegalDataAddress {
		t.Fatalf("write to the SoC: exception %d, want 2", code)
	}
}

// TestSMAStandbyQuirk: the firmware users report takes the complete set
// and runs the battery at 0 W in 2289 and 2290.
func TestSMAStandbyQuirk(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC))
	if _, err := NewVendor(VendorConfig{Profile: "sma_storage", Quirk: "sleepy", Now: clock.Now}); err == nil {
		t.Fatal("an unknown quirk was taken")
	}
	v, err := NewVendor(VendorConfig{Profile: "sma_storage", Quirk: "standby", LoadW: 400, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	smaSetWrite(t, v, 2289, 2000, 2000, 0, 0)
	if st := v.State(); !st.Forced || st.BatteryW != 0 {
		t.Fatalf("charge set on the standby firmware: %+v, want taken and 0 W", st)
	}
}

// TestAlphaESSDispatch: 32000 − W charges and 32000 + W discharges, the
// dispatch ends when its time runs out (start reads 0), a charge stops at
// the target SoC, a power beyond the battery's rating gets exception 3,
// and a write-single request is neither applied nor answered.
func TestAlphaESSDispatch(t *testing.T) {
	t.Parallel()
	v, clock := newTestVendor(t, "alphaess", nil)
	block := func(w int, soc, secs uint16) []uint16 {
		return []uint16{1, 0, uint16(aeOffset + w), 0, aeOffset, 2, soc, 0, secs}
	}
	if code := writeRegs(v, aeStart, block(-2000, 250, 120)...); code != 0 {
		t.Fatalf("exception %d", code)
	}
	if st := v.State(); st.BatteryW != -2000 {
		t.Fatalf("32000 − 2000: %+v, want charging 2000 W", st)
	}
	writeRegs(v, aeStart, block(1500, 25, 120)...)
	if st := v.State(); st.BatteryW != 1500 {
		t.Fatalf("32000 + 1500: %+v, want discharging 1500 W", st)
	}
	clock.Advance(121 * time.Second)
	if st := v.State(); st.Forced || st.Reverts != 1 || st.BatteryW != 400 || v.Holding(aeStart, 1)[0] != 0 {
		t.Fatalf("after the dispatch time: %+v, start %d; want the system's own logic", st, v.Holding(aeStart, 1)[0])
	}
	writeRegs(v, aeStart, block(-2000, 100, 120)...) // target 40 %: below the SoC
	if st := v.State(); st.BatteryW != 0 {
		t.Fatalf("charge towards a target SoC already passed: %+v, want 0 W", st)
	}
	if code := writeRegs(v, aeStart, block(-9000, 250, 120)...); code != ExceptionIllegalDataValue {
		t.Fatalf("9000 W on a 5000 W battery: exception %d, want 3", code)
	}
	if code := writeRegs(v, aePower+1, aeOffset+9000); code != ExceptionIllegalDataValue {
		t.Fatalf("9000 W in the power's low word alone: exception %d, want 3", code)
	}
	resp, act := v.serve(context.Background(), v.Unit(), []byte{fcWriteSingle, aeStart >> 8, aeStart & 0xFF, 0, 0})
	if resp != nil || act != actSilent || v.Holding(aeStart, 1)[0] != 1 {
		t.Fatalf("FC 06 of start 0: answer %v, start %d; want no answer and the dispatch still started", resp, v.Holding(aeStart, 1)[0])
	}
}

// TestHalfWrittenValuesAreJudgedWhole: a write of one word of a 32-bit
// value is judged by the value the pair would hold, the other word as
// held. SolarEdge's timeout (3600 s held, low word first) with its high
// word written 2 would be 134672 s, past the 86400 s the device takes:
// exception 3, and the timeout stays 3600 s; high word 1 (69136 s) is
// within it and taken, after which a low word of 0xFFFF (131071 s) is
// refused. A charge limit and a Kostal setpoint turned negative or NaN by
// their high word alone are refused too.
func TestHalfWrittenValuesAreJudgedWhole(t *testing.T) {
	t.Parallel()
	se, _ := newTestVendor(t, "solaredge_storedge", map[uint16]uint16{0xE004: 4, 0xE005: 1})
	for _, c := range []struct {
		addr     uint16
		val      uint16
		want     byte
		timeout  []uint16
		whatWant string
	}{
		{seTimeout + 1, 2, ExceptionIllegalDataValue, []uint16{3600, 0}, "134672 s: refused"},
		{seTimeout + 1, 1, 0, []uint16{3600, 1}, "69136 s: taken"},
		{seTimeout, 0xFFFF, ExceptionIllegalDataValue, []uint16{3600, 1}, "131071 s: refused"},
		{seTimeout, 0, 0, []uint16{0, 1}, "65536 s: taken"},
	} {
		code := writeRegs(se, c.addr, c.val)
		got := se.Holding(seTimeout, 2)
		if code != c.want || got[0] != c.timeout[0] || got[1] != c.timeout[1] {
			t.Errorf("SolarEdge %#x = %d alone: exception %d, timeout words %v; want %s (exception %d, %v)",
				c.addr, c.val, code, got, c.whatWant, c.want, c.timeout)
		}
	}
	_, neg := lowFirstFloat(-500)
	if code := writeRegs(se, seChargeLim+1, neg); code != ExceptionIllegalDataValue || se.State().Forced {
		t.Errorf("SolarEdge charge limit's high word made negative alone: exception %d, state %+v; want 3", code, se.State())
	}
	k, _ := newTestVendor(t, "kostal_plenticore", nil)
	_, nan := lowFirstFloat(float32(math.NaN()))
	if code := writeRegs(k, koSetpoint+1, nan); code != ExceptionIllegalDataValue || k.State().Forced {
		t.Errorf("Kostal setpoint's high word made NaN alone: exception %d, state %+v; want 3 and nothing forced", code, k.State())
	}
}
