package drivers

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/hearth-energy/hearth"
)

// ReadProfile reads a profile's points from unit with the reads of plan
// (from Plan over p.Points) and decodes them. Scale-factor points are
// decoded too, and applied to the points that name them. A failed read
// leaves its points with quality comm_error and the first error is
// returned with the values.
func ReadProfile(ctx context.Context, bus *Bus, unit uint8, p *Profile, plan []ReadRequest) (map[string]hearth.Point, error) {
	out, _, err := readProfile(ctx, bus, unit, p, plan, nil)
	return out, err
}

// readProfile is ReadProfile around holes the device was found to refuse:
// a read refused with exception 2 is split (readSplitting), what it
// refused is returned as learned, and a point whose registers (or scale
// factor's) lie in a hole, learned or known, is not_implemented.
func readProfile(ctx context.Context, bus *Bus, unit uint8, p *Profile, plan []ReadRequest, holes []Hole) (map[string]hearth.Point, []Hole, error) {
	regsOf := make([][]uint16, len(p.Points))
	var firstErr error
	var learned []Hole
	for _, r := range plan {
		got := readSplitting(ctx, bus, unit, p.Points, r)
		if got.err != nil && firstErr == nil {
			firstErr = got.err
		}
		learned = append(learned, got.holes...)
		for i, regs := range got.regs {
			regsOf[i] = regs
		}
	}
	holes = append(slices.Clone(holes), learned...)
	refused := map[string]bool{}
	for _, pt := range p.Points {
		if inHoles(holes, pt) {
			refused[pt.Name] = true
		}
	}
	raw := map[string]*float64{}
	for i, pt := range p.Points {
		if pt.Type == "sunssf" && regsOf[i] != nil {
			if v, ok := RawValue(pt, regsOf[i]); ok {
				raw[pt.Name] = &v
			}
		}
	}
	out := make(map[string]hearth.Point, len(p.Points))
	for i, pt := range p.Points {
		switch {
		case pt.WriteOnly:
			// Never read: not a point value.
		case refused[pt.Name] || pt.SF != "" && refused[pt.SF]:
			out[pt.Name] = hearth.Q(hearth.QualityNotImplemented)
		case regsOf[i] == nil:
			out[pt.Name] = hearth.Q(hearth.QualityCommError)
		case pt.Type == "string":
			// Strings are identity, not telemetry: not a point value.
		case pt.SF != "" && raw[pt.SF] == nil && regsOf[i] != nil:
			out[pt.Name] = hearth.Q(hearth.QualityCommError)
		default:
			out[pt.Name] = Decode(pt, regsOf[i], raw[pt.SF])
		}
	}
	applySignBits(p, out, regsOf)
	applyMinus(p, out)
	return out, learned, firstErr
}

// applyMinus takes the value of each point's minus point from it (both
// decoded, each checked against its own range), and checks the result
// against the point's range. A minus point that does not read good gives
// its quality to the result.
func applyMinus(p *Profile, out map[string]hearth.Point) {
	for _, pt := range p.Points {
		if pt.Minus == "" {
			continue
		}
		v, ok := out[pt.Name]
		if !ok || !v.Good() {
			continue
		}
		m, ok := out[pt.Minus]
		switch {
		case !ok:
			out[pt.Name] = hearth.Q(hearth.QualityCommError)
		case !m.Good():
			out[pt.Name] = hearth.Q(m.Quality)
		default:
			v.Value -= m.Value
			r, has := pt.Plausible()
			out[pt.Name] = plausible(v, r, has)
		}
	}
}

// applySignBits makes the points with a sign_bit negative when their bit
// is set in the registers read (regsOf, by point); a point whose bit was
// not read is comm_error.
func applySignBits(p *Profile, out map[string]hearth.Point, regsOf [][]uint16) {
	for _, pt := range p.Points {
		sb := pt.SignBit
		if sb == nil {
			continue
		}
		v, ok := out[pt.Name]
		if !ok || !v.Good() {
			continue
		}
		i := slices.IndexFunc(p.Points, func(b PointSpec) bool { return b.Name == sb.Point })
		bits, ok := RawValue(p.Points[i], regsOf[i])
		if !ok {
			out[pt.Name] = hearth.Q(hearth.QualityCommError)
			continue
		}
		v.Value = math.Abs(v.Value)
		if uint16(bits)&(1<<sb.Bit) != 0 && v.Value != 0 {
			v.Value = -v.Value
		}
		out[pt.Name] = v
	}
}

// ProfileDevice is a device read through a fixed register map (a profile
// with points): the planner's reads once per Poll, decoded point by point.
type ProfileDevice struct {
	name    string
	bus     *Bus
	unit    uint8
	profile *Profile
	plan    []ReadRequest
	seen    seenPoints // points that have carried a value; Poll's goroutine only
	holes   []Hole     // registers the device refused (learned, for this run only: a fixed map has no identity); Poll's goroutine only
}

// NewProfileDevice returns a device on bus at unit read with profile p,
// which must have points (not a discovery profile). The reads are planned
// once, here.
func NewProfileDevice(name string, bus *Bus, unit uint8, p *Profile) *ProfileDevice {
	return &ProfileDevice{name: name, bus: bus, unit: unit, profile: p, plan: planAround(p.Points, p.Holes, p.MaxGap), seen: seenPoints{}}
}

// Name returns the device's configured name.
func (d *ProfileDevice) Name() string { return d.name }

// Identity is empty: a fixed map carries no identity model.
func (d *ProfileDevice) Identity() Identity { return Identity{} }

// Plan returns the reads one Poll makes.
func (d *ProfileDevice) Plan() []ReadRequest { return d.plan }

// Poll reads the profile's points and returns a reading. Scale-factor
// points are applied, not reported. When a read fails its points carry
// quality comm_error and the first error is returned with the reading. A
// value outside the point's physical range is out_of_range, and a point
// that has carried values and then reads as not implemented is
// comm_error: a device does not lose a point while it runs. Poll is for
// one goroutine at a time.
func (d *ProfileDevice) Poll(ctx context.Context, now func() time.Time) (hearth.Reading, error) {
	pts, learned, err := readProfile(ctx, d.bus, d.unit, d.profile, d.plan, d.holes)
	if len(learned) > 0 {
		// Plan again around what the device refused: the points in it
		// are left out, and no read bridges it.
		d.holes = append(d.holes, learned...)
		d.plan = planAround(d.profile.Points, append(slices.Clone(d.profile.Holes), d.holes...), d.profile.MaxGap)
	}
	r := hearth.Reading{Device: d.name, Time: now(), Points: map[string]hearth.Point{}}
	for _, pt := range d.profile.Points {
		if pt.Type == "sunssf" || pt.Type == "string" {
			continue
		}
		if p, ok := pts[pt.Name]; ok {
			r.Points[pt.Name] = d.seen.vet(pt.Name, p)
		}
	}
	return r, err
}
