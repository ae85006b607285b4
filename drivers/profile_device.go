package drivers

import (
	"context"

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
	return out, firstErr
}
