package drivers

import (
	"math"
	"testing"
)

// FuzzDecode runs every point type and order over arbitrary registers: no
// panic, and a good value is always finite.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint16(0x8000), uint16(1), uint16(2), uint16(3), int16(-2))
	f.Add(uint8(7), uint8(3), uint16(0x7FC0), uint16(0), uint16(0), uint16(0), int16(0))
	f.Add(uint8(9), uint8(1), uint16(0xFFFF), uint16(0xFFFF), uint16(0xFFFF), uint16(0xFFFF), int16(11))
	types := []string{"u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64", "enum", "bitfield", "sunssf", "string"}
	f.Fuzz(func(t *testing.T, ty, order uint8, r0, r1, r2, r3 uint16, sf int16) {
		p := PointSpec{Type: types[int(ty)%len(types)], Length: 4}
		if order&1 != 0 {
			p.WordOrder = "little"
		}
		if order&2 != 0 {
			p.ByteOrder = "little"
		}
		if order&4 != 0 {
			p.SF = "sf"
		}
		regs := []uint16{r0, r1, r2, r3}
		s := float64(sf)
		got := Decode(p, regs, &s)
		if got.Good() && (math.IsNaN(got.Value) || math.IsInf(got.Value, 0)) {
			t.Fatalf("%+v % x: good point with value %v", p, regs, got.Value)
		}
		_ = StringValue(p, regs)
	})
}
