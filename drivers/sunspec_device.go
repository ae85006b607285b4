package drivers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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

	// mu guards models and identity against readers on other goroutines
	// (the birth record, diagnostics); the poll goroutine is the only
	// writer, and reads them without it.
	mu       sync.Mutex
	base     uint16
	models   []ModelInstance
	identity Identity

	// The poll plan, made after discovery.
	wanted   []wantedPoint
	specs    []PointSpec
	plan     []ReadRequest
	fallback map[string]bool // names whose first model said not_implemented
}

// NewSunSpecDevice returns a device on bus at unit. Discovery happens on the
// first Poll, and again after a failed one.
func NewSunSpecDevice(name string, bus *Bus, unit uint8) *SunSpecDevice {
	return &SunSpecDevice{name: name, bus: bus, unit: unit}
}

// Name returns the device's configured name.
func (d *SunSpecDevice) Name() string { return d.name }

// Identity returns what model 1 said, after discovery.
func (d *SunSpecDevice) Identity() Identity {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.identity
}

// Models returns the model chain found by discovery.
func (d *SunSpecDevice) Models() []ModelInstance {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.models)
}

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
	d.mu.Lock()
	d.base, d.models = base, models
	d.mu.Unlock()
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
		id := Identity{Manufacturer: str("Mn"), Model: str("Md"), Serial: str("SN"), Firmware: str("Vr")}
		d.mu.Lock()
		d.identity = id
		d.mu.Unlock()
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

// Poll reads the points hearth maps, and their scale factors, in the
// reads the planner finds cheapest on the bus (PollPlan), and returns a
// reading. When the device cannot be read, every point it would have
// given carries quality comm_error, and the error is returned too.
func (d *SunSpecDevice) Poll(ctx context.Context, now func() time.Time) (hearth.Reading, error) {
	r := hearth.Reading{Device: d.name, Points: map[string]hearth.Point{}}
	if d.models == nil {
		if err := d.Discover(ctx); err != nil {
			r.Time = now()
			commError(r.Points, SunSpecPointNames())
			return r, err
		}
		d.wanted, d.specs, d.plan = d.planPoll()
	}
	// Registers of each model read this cycle, by model address; a point
	// whose read failed stays nil.
	regsOf := map[uint16][]uint16{}
	okSpec := make([]bool, len(d.specs))
	var firstErr error
	for _, rq := range d.plan {
		regs, err := d.bus.Read(ctx, d.unit, Holding, rq.Addr, rq.Count)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, i := range rq.Points {
			okSpec[i] = true
			w := d.wantedSpec(i)
			blk := regsOf[w.model.Address]
			if blk == nil {
				blk = make([]uint16, int(w.model.Length)+2)
				regsOf[w.model.Address] = blk
			}
			sp := d.specs[i]
			copy(blk[sp.Address-w.model.Address:], regs[sp.Address-rq.Addr:sp.Address-rq.Addr+sp.Size()])
		}
	}
	for _, w := range d.wanted {
		if _, done := r.Points[w.name]; done && r.Points[w.name].Good() {
			continue
		}
		if !okSpec[w.spec] || (w.sfSpec >= 0 && !okSpec[w.sfSpec]) {
			r.Points[w.name] = hearth.Q(hearth.QualityCommError)
			continue
		}
		p := decodeAt(w.def, w.point, w.base, regsOf[w.model.Address])
		r.Points[w.name] = p
		if p.Quality == hearth.QualityNotImplemented && w.primary && !d.fallback[w.name] {
			// Read the next model's point for this name from the next cycle.
			if d.fallback == nil {
				d.fallback = map[string]bool{}
			}
			d.fallback[w.name] = true
			d.wanted, d.specs, d.plan = d.planPoll()
		}
	}
	r.Time = now()
	if firstErr != nil {
		// A failed read may mean the map changed (firmware update, other
		// device at the address): discover again next time.
		d.mu.Lock()
		d.models = nil
		d.mu.Unlock()
	}
	return r, firstErr
}

// wantedPoint is one point a SunSpec poll decodes.
type wantedPoint struct {
	name    string
	model   ModelInstance
	def     *sunspec.Model
	point   sunspec.PointDef
	base    uint16 // offset of the point's block (a repetition) from the model's ID
	spec    int    // index of the point's registers in specs
	sfSpec  int    // index of its scale factor's, or -1
	primary bool   // the first model that gives this name
}

func (d *SunSpecDevice) wantedSpec(i int) wantedPoint {
	for _, w := range d.wanted {
		if w.spec == i || w.sfSpec == i {
			return w
		}
	}
	return wantedPoint{}
}

// Most MPPT modules (model 160 repetitions) read: enough for any
// residential inverter.
const maxMPPTModules = 16

// planPoll lists the points a poll decodes, their registers and their
// scale factors' as planner points (absolute addresses), and the reads.
// A name comes from the first model in sunspecMap's order the device
// has; the next model is read for it too once the first said
// not_implemented.
func (d *SunSpecDevice) planPoll() ([]wantedPoint, []PointSpec, []ReadRequest) {
	var wanted []wantedPoint
	var specs []PointSpec
	at := map[uint16]int{} // spec index by address
	spec := func(addr, size uint16, name string) int {
		if i, ok := at[addr]; ok {
			return i
		}
		at[addr] = len(specs)
		specs = append(specs, PointSpec{Name: name, Address: addr, Table: Holding, Type: "string", Length: size})
		return len(specs) - 1
	}
	add := func(name string, m ModelInstance, def *sunspec.Model, p sunspec.PointDef, base uint16, primary bool) {
		if int(base)+int(p.Offset)+int(p.Size) > int(m.Length)+2 {
			return // the device's model is shorter than the definition
		}
		w := wantedPoint{name: name, model: m, def: def, point: p, base: base, sfSpec: -1, primary: primary}
		w.spec = spec(m.Address+base+p.Offset, p.Size, name)
		if p.SF != "" {
			sf, ok := def.Point(p.SF)
			if !ok || int(sf.Offset) >= int(m.Length)+2 {
				return
			}
			w.sfSpec = spec(m.Address+sf.Offset, 1, p.SF)
		}
		wanted = append(wanted, w)
	}
	taken := map[string]bool{}
	for _, row := range sunspecMap {
		m, ok := d.model(row.model)
		if !ok || (taken[row.name] && !d.fallback[row.name]) {
			continue
		}
		def := sunspec.Lookup(row.model)
		p, ok := def.Point(row.point)
		if !ok {
			continue
		}
		add(row.name, m, def, p, 0, !taken[row.name])
		taken[row.name] = true
	}
	if m, ok := d.model(160); ok {
		def := sunspec.Lookup(160)
		n := 0
		if m.Length > def.FixedLen {
			n = int((m.Length - def.FixedLen) / def.RepeatLen)
		}
		for k := range min(n, maxMPPTModules) {
			base := 2 + def.FixedLen + uint16(k)*def.RepeatLen
			for _, rp := range def.RepeatPoints {
				suffix := map[string]string{"DCW": "dc_w", "DCV": "dc_v", "DCA": "dc_a"}[rp.Name]
				if suffix != "" {
					add(fmt.Sprintf("mppt%d_%s", k+1, suffix), m, def, rp, base, true)
				}
			}
		}
	}
	// No holes: every register of a model chain is readable, and a read
	// may bridge into the next model's header.
	return wanted, specs, Plan(specs, nil, MaxReadRegisters)
}

// PollPlan returns, after discovery, the registers a poll needs (the
// points' and their scale factors', as planner points) and the reads that
// carry them.
func (d *SunSpecDevice) PollPlan() ([]PointSpec, []ReadRequest) { return d.specs, d.plan }

// decodeAt decodes point p of a model whose block (the fixed block, or a
// repetition) starts base registers after the model's ID, applying its
// scale factor from the fixed block and reporting sentinels as
// not_implemented.
func decodeAt(def *sunspec.Model, p sunspec.PointDef, base uint16, regs []uint16) hearth.Point {
	off := base + p.Offset
	if int(off+p.Size) > len(regs) {
		return hearth.Q(hearth.QualityNotImplemented)
	}
	raw := regs[off : off+p.Size]
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
// answer. Each unit costs one timeout (0: the unit's own) when absent, a
// few reads when present. The first question is asked once, without
// retries, and leaves the unit's down state alone, so a scan through a
// running agent's bus does not change how its devices are polled.
func ScanUnit(ctx context.Context, bus *Bus, unit uint8, timeout time.Duration) (res ScanResult, ok bool) {
	res.Unit = unit
	_, err := bus.ReadOnce(ctx, unit, Holding, sunspec.BaseAddresses[0], 2, timeout)
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
