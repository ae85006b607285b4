package drivers

import (
	"context"
	"time"

	"github.com/hearth-energy/hearth"
)

// ReadProfile reads a profile's points from unit with the reads of plan
// (from Plan over p.Points) and decodes them. Scale-factor points are
// decoded too, and applied to the points that name them. A failed read
// leaves its points with quality comm_error and the first error is
// returned with the values.
func ReadProfile(ctx context.Context, bus *Bus, unit uint8, p *Profile, plan []ReadRequest) (map[string]hearth.Point, error) {
	regsOf := make([][]uint16, len(p.Points))
	var firstErr error
	for _, r := range plan {
		regs, err := bus.Read(ctx, unit, r.Table, r.Addr, r.Count)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, i := range r.Points {
			off := p.Points[i].Address - r.Addr
			regsOf[i] = regs[off : off+p.Points[i].Size()]
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
	applySignBits(p, out, func(name string) (uint16, bool) {
		for i, pt := range p.Points {
			if pt.Name == name && regsOf[i] != nil {
				v, ok := RawValue(pt, regsOf[i])
				return uint16(v), ok
			}
		}
		return 0, false
	})
	return out, firstErr
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
}

// NewProfileDevice returns a device on bus at unit read with profile p,
// which must have points (not a discovery profile). The reads are planned
// once, here.
func NewProfileDevice(name string, bus *Bus, unit uint8, p *Profile) *ProfileDevice {
	return &ProfileDevice{name: name, bus: bus, unit: unit, profile: p, plan: Plan(p.Points, p.Holes, p.MaxGap), seen: seenPoints{}}
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
	pts, err := ReadProfile(ctx, d.bus, d.unit, d.profile, d.plan)
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
