package drivers

import (
	"math"
	"testing"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sunspec"
)

// FuzzDecode runs every point type and order over arbitrary registers,
// under names with and without a physical range: no panic, and a good
// value is always finite and inside the point's range.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint16(0x8000), uint16(1), uint16(2), uint16(3), int16(-2))
	f.Add(uint8(7), uint8(11), uint16(0x7FC0), uint16(0), uint16(0), uint16(0), int16(0))
	f.Add(uint8(9), uint8(17), uint16(0xFFFF), uint16(0xFFFF), uint16(0xFFFF), uint16(0xFFFF), int16(11))
	f.Add(uint8(0), uint8(4), uint16(2500), uint16(0), uint16(0), uint16(0), int16(-1))        // SoC 250 %
	f.Add(uint8(1), uint8(4), uint16(0xFED4), uint16(0), uint16(0), uint16(0), int16(-1))      // SoC -30 %
	f.Add(uint8(1), uint8(28), uint16(0x7FFF), uint16(0), uint16(0), uint16(0), int16(10))     // power at SF 10
	f.Add(uint8(1), uint8(20), uint16(0x8001), uint16(0), uint16(0), uint16(0), int16(-10))    // temperature at SF -10
	f.Add(uint8(6), uint8(24), uint16(0x7F80), uint16(0), uint16(0), uint16(0), int16(0))      // f32 +Inf
	f.Add(uint8(1), uint8(12), uint16(0x1234), uint16(0), uint16(0), uint16(0), int16(-32768)) // SF not implemented
	types := []string{"u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64", "enum", "bitfield", "sunssf", "string"}
	names := []string{"soc_pct", "cell_v_max", "temp_c", "power_w", "vendor_value"}
	f.Fuzz(func(t *testing.T, ty, order uint8, r0, r1, r2, r3 uint16, sf int16) {
		// Bits 0-2 of order: word order, byte order, scale factor; the rest: the name.
		p := PointSpec{Name: names[int(order>>3)%len(names)], Type: types[int(ty)%len(types)], Length: 4, ratingW: float64(r3)}
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
		if r, ok := p.Plausible(); ok && got.Good() && !r.Contains(got.Value) {
			t.Fatalf("%+v % x: good point %v outside its range %+v", p, regs, got.Value, r)
		}
		_ = StringValue(p, regs)
	})
}

// FuzzSunSpecDecode decodes every point hearth maps from hostile
// registers (sentinels, values out of range, scale factors at and beyond
// SunSpec's extremes) against hostile ratings: no panic; a sentinel is
// not_implemented, a scale factor outside -10..10 out_of_range, and a good
// value finite and inside its range.
func FuzzSunSpecDecode(f *testing.F) {
	f.Add(uint8(0), uint16(2500), uint16(0), int16(-1), 5000.0, 0.0, false)     // SoC 250 %
	f.Add(uint8(0), uint16(0xFFFF), uint16(0), int16(-1), 0.0, 0.0, false)      // SoC not implemented
	f.Add(uint8(1), uint16(0x7FFF), uint16(0), int16(10), 5000.0, 4000.0, true) // power at SF 10
	f.Add(uint8(4), uint16(1000), uint16(0), int16(-32768), 0.0, 0.0, false)    // CellV_SF not implemented
	f.Add(uint8(9), uint16(0x8001), uint16(0), int16(-10), 0.0, 0.0, false)     // module temperature at SF -10
	f.Add(uint8(40), uint16(0x8000), uint16(0), int16(0), 0.0, 0.0, true)       // meter W sentinel
	f.Add(uint8(44), uint16(0), uint16(0), int16(0), 0.0, 0.0, false)           // meter energy acc32 0
	f.Add(uint8(3), uint16(100), uint16(0), int16(11), math.Inf(1), math.NaN(), false)
	f.Fuzz(func(t *testing.T, row uint8, r0, r1 uint16, sf int16, battery, inverter float64, exportPositive bool) {
		m := sunspecMap[int(row)%len(sunspecMap)]
		def := sunspec.Lookup(m.model)
		p, ok := def.Point(m.point)
		if !ok {
			t.Fatalf("model %d has no %s", m.model, m.point)
		}
		regs := make([]uint16, def.FixedLen+2)
		regs[p.Offset] = r0
		if p.Size > 1 {
			regs[p.Offset+1] = r1
		}
		if p.SF != "" {
			sp, _ := def.Point(p.SF)
			regs[sp.Offset] = uint16(sf)
		}
		d := &SunSpecDevice{rating: ratings{battery: battery, inverter: inverter}, meterExportPositive: exportPositive}
		w := wantedPoint{name: m.name, def: def, point: p, meterPower: m.name == GridPowerPoint}
		got := d.decode(w, regs)
		switch {
		case sunspec.IsNotImplemented(p.Type, regs[p.Offset:p.Offset+p.Size]) || (p.SF != "" && sf == -32768):
			if got.Quality != hearth.QualityNotImplemented {
				t.Fatalf("%s from a sentinel: %+v, want not_implemented", m.name, got)
			}
		case p.SF != "" && (sf < -10 || sf > 10):
			if got.Quality != hearth.QualityOutOfRange {
				t.Fatalf("%s at SF %d: %+v, want out_of_range", m.name, sf, got)
			}
		case got.Good():
			if math.IsNaN(got.Value) || math.IsInf(got.Value, 0) {
				t.Fatalf("%s: good point with value %v", m.name, got.Value)
			}
			if r, ok := BuiltinRange(m.name, d.rating.ratingFor(m.name)); ok && !r.Contains(got.Value) {
				t.Fatalf("%s: good point %v outside %+v", m.name, got.Value, r)
			}
		}
	})
}

// FuzzRate: a rate register is never written beyond what it carries (0 up
// to 100 % within int16), never asks for more than approved, and without
// saturation misses the approved power by less than one raw step.
func FuzzRate(f *testing.F) {
	f.Add(2000.0, 5000.0, int16(-3))
	f.Add(2000.0, 5000.0, int16(-2))
	f.Add(-7000.0, 5000.0, int16(-2))
	f.Add(1.0, 5000.0, int16(10))
	f.Add(1e9, 1.0, int16(-10))
	f.Add(0.0, 5000.0, int16(0))
	f.Fuzz(func(t *testing.T, w, ref float64, sf int16) {
		if math.IsNaN(w) || math.IsInf(w, 0) || !(ref > 0) || math.IsInf(ref, 0) || sf < -10 || sf > 10 {
			return // Apply refuses these before a rate is computed
		}
		raw, saturated := rate(w, ref, sf)
		if raw < 0 || float64(raw) > maxRate(sf) || float64(raw) > math.MaxInt16 {
			t.Fatalf("rate(%v, %v, %d) = %d: outside 0..%v", w, ref, sf, raw, maxRate(sf))
		}
		got := float64(raw) * math.Pow10(int(sf)) / 100 * ref
		if got > math.Abs(w)*(1+1e-9) {
			t.Fatalf("rate(%v, %v, %d) = %d: %v W, more than approved", w, ref, sf, raw, got)
		}
		step := math.Pow10(int(sf)) / 100 * ref
		if !saturated && math.Abs(w)-got >= step*(1+1e-9) {
			t.Fatalf("rate(%v, %v, %d) = %d: %v W, more than a step (%v W) short of %v W unsaturated", w, ref, sf, raw, got, step, w)
		}
	})
}

// FuzzWindowHeld: a command a window device is given, encoded as Apply
// encodes it and decoded from the registers, stands for a power in the
// command's direction, never more than approved, and unsaturated within a
// step of it: never 0 W unless both rates cut to 0, whatever the two
// references.
func FuzzWindowHeld(f *testing.F) {
	f.Add(1500.0, 7000.0, 6000.0, int16(-2))
	f.Add(-2000.0, 7000.0, 6000.0, int16(-2))
	f.Add(1234.567, 10000.0, 5000.0, int16(-2))
	f.Add(6500.0, 7000.0, 6000.0, int16(-2))
	f.Add(-6500.0, 7000.0, 6000.0, int16(-2))
	f.Add(0.65, 7000.0, 6000.0, int16(-2))
	f.Add(1500.0, 6000.0, 7000.0, int16(0))
	f.Fuzz(func(t *testing.T, w, outRef, inRef float64, sf int16) {
		// References as a uint16 maximum at a scale factor in -10..10
		// gives them; Apply refuses other scale factors.
		for _, ref := range []float64{outRef, inRef} {
			if !(ref >= 1e-10 && ref <= 65534e10) {
				return
			}
		}
		if math.IsNaN(w) || math.IsInf(w, 0) || sf < -10 || sf > 10 {
			return
		}
		st := StorageStatus{StorCtlMod: storCtlCharge | storCtlDischarge, RateSF: sf, OutRefW: outRef, InRefW: inRef, Window: true}
		st.OutWRte, st.InWRte, st.Saturated = windowRates(w, outRef, inRef, sf)
		got := held(st)
		if st.OutWRte == 0 && st.InWRte == 0 {
			if got != 0 {
				t.Fatalf("%v W against %v and %v W at %d: both rates 0, held %v W", w, outRef, inRef, sf, got)
			}
			return
		}
		if got == 0 || math.Signbit(got) != math.Signbit(w) || math.Abs(got) > math.Abs(w)*(1+1e-9) {
			t.Fatalf("%v W against %v and %v W at %d: rates %d and %d hold %v W, want a power towards %v W and no more", w, outRef, inRef, sf, st.OutWRte, st.InWRte, got, w)
		}
		step := math.Pow10(int(sf)) / 100 * min(outRef, inRef)
		if !st.Saturated && math.Abs(w)-math.Abs(got) >= step*(1+1e-9) {
			t.Fatalf("%v W against %v and %v W at %d: rates %d and %d hold %v W, more than a step (%v W) short, unsaturated", w, outRef, inRef, sf, st.OutWRte, st.InWRte, got, step)
		}
	})
}
