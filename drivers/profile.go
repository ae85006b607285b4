package drivers

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Profile is a device's register map, from YAML: the points to poll, where
// they are and how to decode them, and the registers that must never be
// read. The sunspec profile has no points: its map is discovered.
type Profile struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Source      string `yaml:"source"`     // the document the map was written from
	Discovery   string `yaml:"discovery"`  // "sunspec": the map is discovered, points are empty
	MaxGap      uint16 `yaml:"max_gap"`    // unused registers a read may bridge
	WordOrder   string `yaml:"word_order"` // default for points: big (high word first) or little
	ByteOrder   string `yaml:"byte_order"` // default for points: big (high byte first) or little
	// RatingW is the device's power rating in watts: its power points
	// (names ending in _w) read beyond ±2× it are out_of_range. 0: unknown,
	// and the bound is hearth.FixedPowerBoundW.
	RatingW float64 `yaml:"rating_w"`
	// MeterSign says how a discovered device's SunSpec meter (models
	// 201-204) signs total real power: import_positive (the default: power
	// drawn from the grid is positive, as on a utility meter) or
	// export_positive. Only for discovery profiles; hearth's grid_power_w
	// is positive exporting either way.
	MeterSign string `yaml:"meter_sign"`
	// StorageControl says how a discovered device reads model 124:
	// standard (empty) or window (Fronius GEN24: the rates bound the
	// device's own logic, so a forced charge is a negative OutWRte).
	StorageControl string `yaml:"storage_control"`
	// Model124 says where a discovered device keeps the model 124
	// registers hearth writes, and the write budget that paces them; nil:
	// DefaultModel124.
	Model124 *Model124   `yaml:"model124"`
	Points   []PointSpec `yaml:"points"`
	Holes    []Hole      `yaml:"holes"`
	// Control says how the device takes a battery power setpoint through
	// its own registers (see Control); nil: the profile is read-only.
	Control *Control `yaml:"control"`
	File    string   `yaml:"-"`

	keyLines map[string]int // line of each key by dotted path (indexLines), for errors
}

// Meter sign conventions (Profile.MeterSign).
const (
	MeterImportPositive = "import_positive"
	MeterExportPositive = "export_positive"
)

// PointSpec is one point of a profile.
type PointSpec struct {
	Name      string            `yaml:"name"`
	Address   uint16            `yaml:"address"` // as on the wire, zero-based
	Table     Table             `yaml:"table"`
	Type      string            `yaml:"type"`
	Length    uint16            `yaml:"length"` // registers, for string
	WordOrder string            `yaml:"word_order"`
	ByteOrder string            `yaml:"byte_order"`
	Scale     float64           `yaml:"scale"` // 0 means 1
	Offset    float64           `yaml:"offset"`
	SF        string            `yaml:"sf"` // name of a sunssf point scaling this one
	Unit      string            `yaml:"unit"`
	Enum      map[uint64]string `yaml:"enum"`
	Bits      map[uint]string   `yaml:"bits"`
	Writable  bool              `yaml:"writable"`
	Min       *float64          `yaml:"min"` // lowest value a write may carry
	Max       *float64          `yaml:"max"` // highest value a write may carry
	// Range is [lo, hi], the values the point can physically take; a
	// decoded value outside it is out_of_range. Without it the point
	// gets BuiltinRange by its name, if there is one.
	Range []float64 `yaml:"range"`
	// SignBit gives an unsigned magnitude its direction: the value is
	// negative when the bit of another point (a bitfield) is set, as
	// Sungrow signs battery power by its power-flow bits.
	SignBit *SignBit `yaml:"sign_bit"`
	// Minus names a point whose value is taken from this one's: a device
	// that reports a power as two unsigned registers, one per direction
	// (SMA's battery charge and discharge power, its grid draw and
	// feed-in), gives the signed value as the one minus the other.
	Minus string `yaml:"minus"`
	// WriteOnly says the device does not read the register back (SMA's WO
	// registers read NaN): it is never polled nor read back, and a control
	// section writes it with every command and release, the whole set of
	// write-only points at once, since what the device holds cannot be
	// read to fill in the rest.
	WriteOnly bool `yaml:"write_only"`
	// Storage is where a writable register keeps what is written: ram,
	// flash or unknown (the default, treated as flash). Control writes to
	// flash and unknown registers keep the profile's write budget.
	Storage string `yaml:"storage"`
	Line    int    `yaml:"-"`

	ratingW float64 // the profile's RatingW, set when the profile is checked
}

// Plausible returns the range the point's decoded values must lie in: its
// own range, else the built-in one for its name at the rating of the
// profile it was parsed with (unknown for a PointSpec built in code). ok
// is false when the point has none.
func (p PointSpec) Plausible() (r Range, ok bool) {
	if len(p.Range) == 2 {
		return Range{Lo: p.Range[0], Hi: p.Range[1]}, true
	}
	if !numericType(p.Type) {
		return Range{}, false
	}
	return BuiltinRange(p.Name, p.ratingW)
}

// numericType reports whether a point type decodes to a physical
// quantity (not a string, an enumeration, a bit field or a scale factor).
func numericType(t string) bool {
	switch t {
	case "u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64":
		return true
	}
	return false
}

// Hole is a register range a device must never be asked for (reading it
// gets an exception, or worse).
type Hole struct {
	Table Table  `yaml:"table"`
	From  uint16 `yaml:"from"`
	To    uint16 `yaml:"to"` // inclusive
}

// typeSizes is the register count of each point type; string takes its
// length.
var typeSizes = map[string]uint16{
	"u16": 1, "s16": 1, "u32": 2, "s32": 2, "u64": 4, "s64": 4, "f32": 2, "f64": 4,
	"enum": 1, "bitfield": 1, "sunssf": 1, "string": 0,
}

// Size returns how many registers the point takes.
func (p PointSpec) Size() uint16 {
	if p.Type == "string" {
		return p.Length
	}
	return typeSizes[p.Type]
}

// ProfileError is one problem in a profile file, at a line.
type ProfileError struct {
	File  string
	Line  int
	Point string // empty for problems outside a point
	Msg   string
}

func (e ProfileError) Error() string {
	s := fmt.Sprintf("%s:%d: ", e.File, e.Line)
	if e.Point != "" {
		s += "point " + e.Point + ": "
	}
	return s + e.Msg
}

//go:embed profiles/*.yaml
var embedded embed.FS

// EmbeddedProfiles lists the names of the profiles built into hearth.
func EmbeddedProfiles() []string {
	ents, _ := embedded.ReadDir("profiles")
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// EmbeddedProfile returns a built-in profile by name.
func EmbeddedProfile(name string) (*Profile, error) {
	data, err := embedded.ReadFile(path.Join("profiles", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("no built-in profile %q (have %s)", name, strings.Join(EmbeddedProfiles(), ", "))
	}
	return ParseProfile("profiles/"+name+".yaml", data)
}

// LoadProfile reads a profile file.
func LoadProfile(file string) (*Profile, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	return ParseProfile(file, data)
}

// ParseProfile parses and checks a profile. Every problem is returned, as
// errors joined, each a ProfileError naming the file, line and point.
func ParseProfile(file string, data []byte) (*Profile, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, ProfileError{File: file, Line: 0, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var errs []error
			for _, m := range te.Errors {
				e := ProfileError{File: file, Msg: m}
				if sub := lineRe.FindStringSubmatch(m); sub != nil {
					e.Line, _ = strconv.Atoi(sub[1])
					e.Msg = sub[2]
					if k := unknownRe.FindStringSubmatch(e.Msg); k != nil {
						e.Msg = fmt.Sprintf("unknown key %q", k[1])
					}
					e.Point = pointAt(&root, e.Line)
				}
				errs = append(errs, e)
			}
			return nil, errors.Join(errs...)
		}
		return nil, ProfileError{File: file, Msg: err.Error()}
	}
	p.File = file
	p.keyLines = map[string]int{}
	if len(root.Content) > 0 {
		indexLines(root.Content[0], "", p.keyLines)
	}
	for j := range p.Points {
		p.Points[j].Line = p.keyLines[fmt.Sprintf("points.%d", j)]
	}
	err := p.check()
	if p.Control != nil {
		err = errors.Join(err, p.checkControl())
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// indexLines records the line of every key under n by dotted path:
// rating_w, control.setpoint.charge.point, sequence items by index
// (points.3, control.arm.0).
func indexLines(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if path != "" {
				k = path + "." + k
			}
			lines[k] = n.Content[i].Line
			indexLines(n.Content[i+1], k, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			k := fmt.Sprintf("%s.%d", path, i)
			lines[k] = c.Line
			indexLines(c, k, lines)
		}
	}
}

var (
	lineRe    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRe = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// pointAt returns the name of the point whose entry holds line, or "".
func pointAt(root *yaml.Node, line int) string {
	if len(root.Content) == 0 {
		return ""
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != "points" {
			continue
		}
		if i+2 < len(m.Content) && m.Content[i+2].Line <= line {
			return "" // past the points, in a key after them
		}
		items := m.Content[i+1].Content
		for j, n := range items {
			if n.Line > line || (j+1 < len(items) && items[j+1].Line <= line) {
				continue
			}
			for k := 0; k+1 < len(n.Content); k += 2 {
				if n.Content[k].Value == "name" {
					return n.Content[k+1].Value
				}
			}
			return fmt.Sprintf("#%d", j+1)
		}
	}
	return ""
}

func (p *Profile) check() error {
	var errs []error
	bad := func(pt *PointSpec, format string, args ...any) {
		e := ProfileError{File: p.File, Msg: fmt.Sprintf(format, args...)}
		if pt != nil {
			e.Line, e.Point = pt.Line, pt.Name
		}
		errs = append(errs, e)
	}
	if p.Name == "" {
		bad(nil, "name: required")
	}
	for i := range p.Holes {
		h := &p.Holes[i]
		if h.Table == "" {
			h.Table = Holding
		}
		if h.From > h.To {
			bad(nil, "hole %d..%d: from is above to", h.From, h.To)
		}
	}
	order := func(pt *PointSpec, what, v string) {
		if v != "" && v != "big" && v != "little" {
			bad(pt, "%s %q: want big or little", what, v)
		}
	}
	order(nil, "word_order", p.WordOrder)
	order(nil, "byte_order", p.ByteOrder)
	if p.Discovery != "" && p.Discovery != "sunspec" {
		bad(nil, "discovery %q: only sunspec is known", p.Discovery)
	}
	if p.Discovery == "" && len(p.Points) == 0 {
		bad(nil, "points: a profile without discovery needs points")
	}
	badKey := func(key, format string, args ...any) {
		errs = append(errs, ProfileError{File: p.File, Line: p.keyLines[key], Msg: fmt.Sprintf(format, args...)})
	}
	if p.RatingW < 0 || math.IsNaN(p.RatingW) || math.IsInf(p.RatingW, 0) {
		badKey("rating_w", "rating_w %g: want watts above 0 (or leave it out)", p.RatingW)
	}
	switch {
	case p.MeterSign == "" || p.MeterSign == MeterImportPositive || p.MeterSign == MeterExportPositive:
		if p.MeterSign != "" && p.Discovery == "" {
			badKey("meter_sign", "meter_sign is for discovery profiles; a point of a fixed map carries its sign in scale")
		}
	default:
		badKey("meter_sign", "meter_sign %q: want %s or %s", p.MeterSign, MeterImportPositive, MeterExportPositive)
	}
	names := map[string]*PointSpec{}
	for i := range p.Points {
		pt := &p.Points[i]
		if pt.Name == "" {
			pt.Name = fmt.Sprintf("#%d", i+1)
			bad(pt, "name: required")
		} else if names[pt.Name] != nil {
			bad(pt, "name used by the point at line %d", names[pt.Name].Line)
		}
		names[pt.Name] = pt
		if pt.Table == "" {
			pt.Table = Holding
		}
		if pt.Table != Holding && pt.Table != Input {
			bad(pt, "table %q: want holding or input", pt.Table)
		}
		if pt.WordOrder == "" {
			pt.WordOrder = p.WordOrder
		}
		if pt.ByteOrder == "" {
			pt.ByteOrder = p.ByteOrder
		}
		order(pt, "word_order", pt.WordOrder)
		order(pt, "byte_order", pt.ByteOrder)
		if _, ok := typeSizes[pt.Type]; !ok {
			bad(pt, "type %q: want one of u16, s16, u32, s32, u64, s64, f32, f64, string, enum, bitfield, sunssf", pt.Type)
			continue
		}
		if pt.Type == "string" && (pt.Length == 0 || pt.Length > MaxReadRegisters) {
			bad(pt, "string needs a length of 1..%d registers", MaxReadRegisters)
		}
		if pt.Type != "string" && pt.Length != 0 {
			bad(pt, "length is only for strings")
		}
		if int(pt.Address)+int(pt.Size()) > 0x10000 {
			bad(pt, "runs past register 65535")
		}
		if pt.Writable && pt.Table == Input {
			bad(pt, "input registers cannot be written")
		}
		if !pt.Writable && (pt.Min != nil || pt.Max != nil) {
			bad(pt, "min and max are for writable points")
		}
		if pt.Min != nil && pt.Max != nil && *pt.Min > *pt.Max {
			bad(pt, "min %g is above max %g", *pt.Min, *pt.Max)
		}
		pt.ratingW = p.RatingW
		if pt.Range != nil {
			switch {
			case !numericType(pt.Type):
				bad(pt, "range is for numeric points, not %s", pt.Type)
			case len(pt.Range) != 2:
				bad(pt, "range wants [lo, hi], got %d numbers", len(pt.Range))
			case math.IsNaN(pt.Range[0]) || math.IsNaN(pt.Range[1]) || pt.Range[0] > pt.Range[1]:
				bad(pt, "range [%g, %g]: lo must not be above hi", pt.Range[0], pt.Range[1])
			}
		}
		if pt.Writable && pt.Size() > MaxWriteRegisters {
			bad(pt, "a write carries at most %d registers", MaxWriteRegisters)
		}
		for _, h := range p.Holes {
			if h.Table == pt.Table && pt.Address <= h.To && pt.Address+pt.Size()-1 >= h.From {
				bad(pt, "lies in the hole %d..%d", h.From, h.To)
			}
		}
	}
	for i := range p.Points {
		pt := &p.Points[i]
		if pt.SF == "" {
			continue
		}
		sf, ok := names[pt.SF]
		switch {
		case !ok:
			bad(pt, "sf %q: no such point", pt.SF)
		case sf.Type != "sunssf":
			bad(pt, "sf %q: is a %s, not a sunssf", pt.SF, sf.Type)
		case sf.Table != pt.Table:
			bad(pt, "sf %q: is in another table", pt.SF)
		}
	}
	errs = append(errs, p.checkPointExtras(names)...)
	return errors.Join(errs...)
}
