package drivers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sunspec"
)

// Identity is what a device says about itself (SunSpec model 1).
type Identity struct {
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	Firmware     string `json:"firmware"`
}

// ModelInstance is one SunSpec model found on a device.
type ModelInstance struct {
	ID      uint16 `json:"id"`
	Address uint16 `json:"address"` // of the model's ID register
	Length  uint16 `json:"length"`  // the L register: registers after ID and L
}

// sunspecMap names the points hearth reads from each model. Earlier rows
// win when two models give the same point (model 802's SoC before model
// 124's ChaState).
var sunspecMap = []struct {
	model uint16
	point string
	name  string
}{
	{802, "SoC", "soc_pct"},
	{802, "W", "power_w"},
	{802, "V", "battery_v"},
	{802, "A", "battery_a"},
	{802, "CellVMax", "cell_v_max"},
	{802, "CellVMin", "cell_v_min"},
	{802, "SoH", "soh_pct"},
	{124, "ChaState", "soc_pct"},
	{124, "InBatV", "battery_v"},
	{103, "W", "ac_power_w"},
	{103, "Hz", "ac_hz"},
	{103, "PhVphA", "ac_v"},
	{103, "A", "ac_a"},
	{103, "WH", "ac_energy_wh"},
	{103, "DCW", "dc_power_w"},
	{103, "TmpCab", "temp_c"},
	{103, "TmpSnk", "temp_sink_c"},
	{101, "W", "ac_power_w"},
	{101, "Hz", "ac_hz"},
	{101, "PhVphA", "ac_v"},
	{101, "A", "ac_a"},
	{101, "WH", "ac_energy_wh"},
	{101, "DCW", "dc_power_w"},
	{101, "TmpCab", "temp_c"},
	{101, "TmpSnk", "temp_sink_c"},
	{102, "W", "ac_power_w"},
	{102, "Hz", "ac_hz"},
	{102, "PhVphA", "ac_v"},
	{102, "A", "ac_a"},
	{102, "WH", "ac_energy_wh"},
	{102, "DCW", "dc_power_w"},
	{102, "TmpCab", "temp_c"},
	{102, "TmpSnk", "temp_sink_c"},
}

// SunSpecPointNames lists every point name a SunSpec device can report.
func SunSpecPointNames() []string {
	seen := map[string]bool{}
	var names []string
	for _, m := range sunspecMap {
		if !seen[m.name] {
			seen[m.name] = true
			names = append(names, m.name)
		}
	}
	return names
}

// SunSpecDevice is a device whose register map is discovered through the
// SunSpec model chain.
type SunSpecDevice struct {
	name string
	bus  *Bus
	unit uint8

	base     uint16
	models   []ModelInstance
	identity Identity
}

// NewSunSpecDevice returns a device on bus at unit. Discovery happens on the
// first Poll, and again after a failed one.
func NewSunSpecDevice(name string, bus *Bus, unit uint8) *SunSpecDevice {
	return &SunSpecDevice{name: name, bus: bus, unit: unit}
}

// Name returns the device's configured name.
func (d *SunSpecDevice) Name() string { return d.name }

// Identity returns what model 1 said, after discovery.
func (d *SunSpecDevice) Identity() Identity { return d.identity }

// Models returns the model chain found by discovery.
func (d *SunSpecDevice) Models() []ModelInstance { return d.models }

// ErrNoSunSpec is returned when no base address holds the SunS marker.
var ErrNoSunSpec = errors.New("no SunSpec marker at 40000, 0 or 50000")

// Discover finds the SunS marker and walks the model chain to its end.
func (d *SunSpecDevice) Discover(ctx context.Context) error {
	base, err := FindSunSpecBase(ctx, d.bus, d.unit)
	if err != nil {
		return err
	}
	models, err := WalkModels(ctx, d.bus, d.unit, base)
	if err != nil {
		return err
	}
	d.base, d.models = base, models
	if m, ok := d.model(1); ok {
		regs, err := d.bus.Read(ctx, d.unit, Holding, m.Address, min(m.Length+2, MaxReadRegisters))
		if err != nil {
			return fmt.Errorf("read common model: %w", err)
		}
		def := sunspec.Lookup(1)
		str := func(point string) string {
			p, _ := def.Point(point)
			if int(p.Offset+p.Size) > len(regs) {
				return ""
			}
			return sunspec.String(regs[p.Offset : p.Offset+p.Size])
		}
		d.identity = Identity{Manufacturer: str("Mn"), Model: str("Md"), Serial: str("SN"), Firmware: str("Vr")}
	}
	return nil
}

// FindSunSpecBase probes the SunSpec base addresses for the SunS marker.
func FindSunSpecBase(ctx context.Context, bus *Bus, unit uint8) (uint16, error) {
	var errs []error
	for _, base := range sunspec.BaseAddresses {
		regs, err := bus.Read(ctx, unit, Holding, base, 2)
		if err != nil {
			if ctx.Err() != nil {
				return 0, err
			}
			errs = append(errs, err)
			continue
		}
		if uint32(regs[0])<<16|uint32(regs[1]) == sunspec.Marker {
			return base, nil
		}
	}
	if len(errs) == len(sunspec.BaseAddresses) {
		return 0, fmt.Errorf("probe SunSpec: %w", errors.Join(errs...))
	}
	return 0, ErrNoSunSpec
}

// WalkModels reads the model chain that starts after the marker at base.
func WalkModels(ctx context.Context, bus *Bus, unit uint8, base uint16) ([]ModelInstance, error) {
	var models []ModelInstance
	addr := base + 2
	for range 256 {
		hdr, err := bus.Read(ctx, unit, Holding, addr, 2)
		if err != nil {
			return nil, fmt.Errorf("walk SunSpec models at %d: %w", addr, err)
		}
		if hdr[0] == sunspec.EndModelID {
			return models, nil
		}
		models = append(models, ModelInstance{ID: hdr[0], Address: addr, Length: hdr[1]})
		next := uint32(addr) + 2 + uint32(hdr[1])
		if next > 0xFFFF {
			return nil, fmt.Errorf("walk SunSpec models: model %d at %d runs past the address space", hdr[0], addr)
		}
		addr = uint16(next)
	}
	return nil, errors.New("walk SunSpec models: no end marker after 256 models")
}

func (d *SunSpecDevice) model(id uint16) (ModelInstance, bool) {
	for _, m := range d.models {
		if m.ID == id {
			return m, true
		}
	}
	return ModelInstance{}, false
}

// Poll reads the models hearth maps, one request per model, and returns a
// reading. When the device cannot be read, every point it would have given
// carries quality comm_error, and the error is returned too.
func (d *SunSpecDevice) Poll(ctx context.Context, now func() time.Time) (hearth.Reading, error) {
	r := hearth.Reading{Device: d.name, Points: map[string]hearth.Point{}}
	if d.models == nil {
		if err := d.Discover(ctx); err != nil {
			r.Time = now()
			commError(r.Points, SunSpecPointNames())
			return r, err
		}
	}
	var firstErr error
	for _, id := range []uint16{802, 124, 103, 101, 102} {
		m, ok := d.model(id)
		if !ok {
			continue
		}
		def := sunspec.Lookup(id)
		n := min(m.Length+2, def.FixedLen+2)
		regs, err := d.readBlock(ctx, m.Address, n)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			for _, row := range sunspecMap {
				if row.model == id {
					if _, ok := r.Points[row.name]; !ok {
						r.Points[row.name] = hearth.Q(hearth.QualityCommError)
					}
				}
			}
			continue
		}
		for _, row := range sunspecMap {
			if row.model != id {
				continue
			}
			if p, ok := r.Points[row.name]; ok && p.Good() {
				continue
			}
			r.Points[row.name] = decodePoint(def, row.point, regs)
		}
	}
	r.Time = now()
	if firstErr != nil {
		// A failed read may mean the map changed (firmware update, other
		// device at the address): discover again next time.
		d.models = nil
	}
	return r, firstErr
}

// readBlock reads n registers from addr in as few requests as the protocol
// allows.
func (d *SunSpecDevice) readBlock(ctx context.Context, addr, n uint16) ([]uint16, error) {
	regs := make([]uint16, 0, n)
	for len(regs) < int(n) {
		c := min(n-uint16(len(regs)), MaxReadRegisters)
		part, err := d.bus.Read(ctx, d.unit, Holding, addr+uint16(len(regs)), c)
		if err != nil {
			return nil, err
		}
		regs = append(regs, part...)
	}
	return regs, nil
}

// decodePoint decodes one point of a model block, applying its scale factor
// and reporting sentinels as not_implemented.
func decodePoint(def *sunspec.Model, name string, regs []uint16) hearth.Point {
	p, ok := def.Point(name)
	if !ok || int(p.Offset+p.Size) > len(regs) {
		return hearth.Q(hearth.QualityNotImplemented)
	}
	raw := regs[p.Offset : p.Offset+p.Size]
	if sunspec.IsNotImplemented(p.Type, raw) {
		return hearth.Q(hearth.QualityNotImplemented)
	}
	v := sunspec.Raw(p.Type, raw)
	if p.SF != "" {
		sf, ok := def.Point(p.SF)
		if !ok || int(sf.Offset) >= len(regs) {
			return hearth.Q(hearth.QualityNotImplemented)
		}
		sfRaw := regs[sf.Offset : sf.Offset+1]
		if sunspec.IsNotImplemented("sunssf", sfRaw) {
			return hearth.Q(hearth.QualityNotImplemented)
		}
		s := int16(sfRaw[0])
		if s < -10 || s > 10 {
			// SunSpec allows -10..10; anything else is a broken map.
			return hearth.Q(hearth.QualityOutOfRange)
		}
		v = sunspec.Scale(v, s)
	}
	return hearth.V(v)
}

func commError(points map[string]hearth.Point, names []string) {
	for _, n := range names {
		points[n] = hearth.Q(hearth.QualityCommError)
	}
}

// ScanResult is what a bus scan learnt about one unit.
type ScanResult struct {
	Unit     uint8           `json:"unit"`
	SunSpec  bool            `json:"sunspec"`
	Base     uint16          `json:"base,omitempty"` // where the SunS marker is
	Models   []ModelInstance `json:"models,omitempty"`
	Identity *Identity       `json:"identity,omitempty"`
	Error    string          `json:"error,omitempty"` // why the SunSpec map could not be read
}

// ScanUnit asks unit whether it is there and whether it speaks SunSpec.
// ok is false when the unit did not answer at all; an exception is an
// answer. Each unit costs one timeout when absent, a few reads when
// present.
func ScanUnit(ctx context.Context, bus *Bus, unit uint8) (res ScanResult, ok bool) {
	res.Unit = unit
	_, err := bus.Read(ctx, unit, Holding, sunspec.BaseAddresses[0], 2)
	var exc *ExceptionError
	if err != nil && !errors.As(err, &exc) {
		return res, false
	}
	d := NewSunSpecDevice("scan", bus, unit)
	switch err := d.Discover(ctx); {
	case errors.Is(err, ErrNoSunSpec):
	case err != nil:
		res.Error = err.Error()
	default:
		id := d.Identity()
		res.SunSpec, res.Base, res.Models, res.Identity = true, d.base, d.Models(), &id
	}
	return res, true
}
