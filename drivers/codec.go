package drivers

import (
	"encoding/binary"
	"math"
	"strings"

	"github.com/hearth-energy/hearth"
)

// ordered returns a point's registers as big-endian bytes, high byte of the
// value first, undoing the point's word and byte order.
func ordered(p PointSpec, regs []uint16) []byte {
	n := len(regs)
	b := make([]byte, 2*n)
	for i, r := range regs {
		w := i
		if p.WordOrder == "little" && p.Type != "string" {
			w = n - 1 - i
		}
		if p.ByteOrder == "little" {
			r = r<<8 | r>>8
		}
		binary.BigEndian.PutUint16(b[2*w:], r)
	}
	return b
}

// RawValue decodes a numeric point's registers to an unscaled number. ok
// is false for strings and for registers too short for the type.
func RawValue(p PointSpec, regs []uint16) (v float64, ok bool) {
	if p.Type == "string" || len(regs) < int(p.Size()) || p.Size() == 0 {
		return 0, false
	}
	b := ordered(p, regs[:p.Size()])
	switch p.Type {
	case "u16", "enum", "bitfield":
		return float64(binary.BigEndian.Uint16(b)), true
	case "s16", "sunssf":
		return float64(int16(binary.BigEndian.Uint16(b))), true
	case "u32":
		return float64(binary.BigEndian.Uint32(b)), true
	case "s32":
		return float64(int32(binary.BigEndian.Uint32(b))), true
	case "u64":
		return float64(binary.BigEndian.Uint64(b)), true
	case "s64":
		return float64(int64(binary.BigEndian.Uint64(b))), true
	case "f32":
		return float64(math.Float32frombits(binary.BigEndian.Uint32(b))), true
	case "f64":
		return math.Float64frombits(binary.BigEndian.Uint64(b)), true
	}
	return 0, false
}

// StringValue decodes a string point: ASCII, NUL- or space-padded.
func StringValue(p PointSpec, regs []uint16) string {
	n := min(int(p.Size()), len(regs))
	b := ordered(p, regs[:n])
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimRight(string(b), " ")
}

// Decode turns a numeric point's registers into a value: raw × scale ×
// 10^sf + offset. sf is the value of the point's sunssf reference, nil
// when it has none. A SunSpec not-implemented sentinel (in the point or
// its scale factor) gives not_implemented; a non-finite float, a scale
// factor outside SunSpec's -10..10, or a value outside the point's
// physical range (PointSpec.Plausible) gives out_of_range.
func Decode(p PointSpec, regs []uint16, sf *float64) hearth.Point {
	v, ok := RawValue(p, regs)
	if !ok {
		return hearth.Q(hearth.QualityNotImplemented)
	}
	if sentinel(p, regs) {
		return hearth.Q(hearth.QualityNotImplemented)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return hearth.Q(hearth.QualityOutOfRange)
	}
	if p.Scale != 0 {
		v *= p.Scale
	}
	if p.SF != "" {
		if sf == nil || *sf == -32768 {
			return hearth.Q(hearth.QualityNotImplemented)
		}
		if *sf < -10 || *sf > 10 {
			return hearth.Q(hearth.QualityOutOfRange)
		}
		v = scaleSF(v, int(*sf))
	}
	v += p.Offset
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return hearth.Q(hearth.QualityOutOfRange) // scaling overflowed
	}
	r, ok := p.Plausible()
	return plausible(hearth.V(v), r, ok)
}

// scaleSF applies 10^sf, rounding to the decimals it gives so 7235 at -2
// is 72.35 exactly as printed.
func scaleSF(v float64, sf int) float64 {
	if sf >= 0 {
		return v * math.Pow10(sf)
	}
	d := math.Pow10(-sf)
	return math.Round(v) / d
}

// sentinel reports the SunSpec not-implemented values for points that a
// sunssf scales (the SunSpec convention), and for sunssf points.
func sentinel(p PointSpec, regs []uint16) bool {
	if p.SF == "" && p.Type != "sunssf" {
		return false
	}
	b := ordered(p, regs[:p.Size()])
	switch p.Type {
	case "s16", "sunssf":
		return binary.BigEndian.Uint16(b) == 0x8000
	case "u16", "enum", "bitfield":
		return binary.BigEndian.Uint16(b) == 0xFFFF
	case "s32":
		return binary.BigEndian.Uint32(b) == 0x80000000
	case "u32":
		return binary.BigEndian.Uint32(b) == 0xFFFFFFFF
	}
	return false
}
