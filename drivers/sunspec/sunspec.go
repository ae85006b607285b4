// Package sunspec holds the SunSpec information model: the register layout
// of the models hearth reads and writes, transcribed from the SunSpec model
// definitions, and the codecs for SunSpec point types, scale factors and
// not-implemented sentinels. It is shared by the device driver and the
// simulator so both read the same map.
package sunspec

import (
	"encoding/binary"
	"math"
	"strings"
)

//go:generate go run ./gen -src ../../../shared/sunspec -out models_gen.go

// Marker is the "SunS" well-known value at the base of a SunSpec map.
const Marker = 0x53756e53

// BaseAddresses are the register addresses probed for the SunS marker, in order.
var BaseAddresses = []uint16{40000, 0, 50000}

// EndModelID marks the end of the model chain.
const EndModelID = 0xFFFF

// PointDef is one point of a model. Offset counts registers from the model's
// ID register (so ID is 0 and L is 1).
type PointDef struct {
	Name      string
	Offset    uint16
	Size      uint16
	Type      string // uint16, int16, acc32, sunssf, string, enum16, bitfield32, …
	SF        string // name of the scale-factor point, if any
	Units     string
	Writable  bool
	Mandatory bool
}

// Model is a SunSpec model definition.
type Model struct {
	ID           uint16
	Name         string
	Label        string
	Points       []PointDef // fixed block, starting with ID and L
	FixedLen     uint16     // length of the fixed block, excluding ID and L
	Repeat       string     // name of the repeating group, if any
	RepeatPoints []PointDef // offsets relative to the start of each repetition
	RepeatLen    uint16
}

// Point returns the named point of the fixed block.
func (m *Model) Point(name string) (PointDef, bool) {
	for _, p := range m.Points {
		if p.Name == name {
			return p, true
		}
	}
	return PointDef{}, false
}

// Lookup returns the definition of model id, or nil when hearth does not
// know it.
func Lookup(id uint16) *Model { return models[id] }

// NotImplemented returns the registers of a point of type typ and size
// registers that carry the type's not-implemented value (IsNotImplemented
// is true of them): what a point a device refuses to serve stands for.
func NotImplemented(typ string, size uint16) []uint16 {
	regs := make([]uint16, size)
	if size == 0 {
		return regs
	}
	switch typ {
	case "int16", "sunssf", "int32", "int64":
		regs[0] = 0x8000
	case "uint16", "enum16", "bitfield16", "uint32", "enum32", "bitfield32", "uint64", "acc64":
		for i := range regs {
			regs[i] = 0xFFFF
		}
	case "float32":
		regs[0] = 0x7FC0 // a quiet NaN
	}
	return regs
}

// IsNotImplemented reports whether the raw registers of a point hold the
// SunSpec not-implemented sentinel for its type.
func IsNotImplemented(typ string, regs []uint16) bool {
	switch typ {
	case "int16", "sunssf":
		return regs[0] == 0x8000
	case "uint16", "enum16", "bitfield16":
		return regs[0] == 0xFFFF
	case "count":
		return regs[0] == 0
	case "acc16":
		return regs[0] == 0
	case "int32":
		return regs[0] == 0x8000 && regs[1] == 0
	case "uint32", "enum32", "bitfield32":
		return regs[0] == 0xFFFF && regs[1] == 0xFFFF
	case "acc32":
		return regs[0] == 0 && regs[1] == 0
	case "int64":
		return regs[0] == 0x8000 && regs[1] == 0 && regs[2] == 0 && regs[3] == 0
	case "uint64", "acc64":
		return regs[0] == 0xFFFF && regs[1] == 0xFFFF && regs[2] == 0xFFFF && regs[3] == 0xFFFF
	case "float32":
		return math.IsNaN(float64(math.Float32frombits(uint32(regs[0])<<16 | uint32(regs[1]))))
	case "string":
		for _, r := range regs {
			if r != 0 {
				return false
			}
		}
		return true
	}
	return false
}

// Raw decodes the registers of a numeric point to an unscaled number. The
// caller checks IsNotImplemented first.
func Raw(typ string, regs []uint16) float64 {
	switch typ {
	case "int16", "sunssf":
		return float64(int16(regs[0]))
	case "int32":
		return float64(int32(uint32(regs[0])<<16 | uint32(regs[1])))
	case "uint32", "acc32", "enum32", "bitfield32":
		return float64(uint32(regs[0])<<16 | uint32(regs[1]))
	case "int64":
		return float64(int64(join64(regs)))
	case "uint64", "acc64":
		return float64(join64(regs))
	case "float32":
		return float64(math.Float32frombits(uint32(regs[0])<<16 | uint32(regs[1])))
	default:
		return float64(regs[0])
	}
}

func join64(regs []uint16) uint64 {
	return uint64(regs[0])<<48 | uint64(regs[1])<<32 | uint64(regs[2])<<16 | uint64(regs[3])
}

// Scale applies a SunSpec scale factor: value × 10^sf, rounded to the
// decimals the scale factor gives, so 7235 with sf -2 is 72.35 and not
// 72.35000000000001.
func Scale(raw float64, sf int16) float64 {
	if sf >= 0 {
		return raw * math.Pow10(int(sf))
	}
	d := math.Pow10(int(-sf))
	return math.Round(raw) / d
}

// String decodes a SunSpec string point: two ASCII characters a register,
// NUL-padded.
func String(regs []uint16) string {
	b := make([]byte, 2*len(regs))
	for i, r := range regs {
		binary.BigEndian.PutUint16(b[2*i:], r)
	}
	return strings.TrimRight(string(b), "\x00 ")
}

// EncodeString encodes s into n registers, NUL-padded; longer strings are cut.
func EncodeString(s string, n int) []uint16 {
	b := make([]byte, 2*n)
	copy(b, s)
	regs := make([]uint16, n)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	return regs
}
