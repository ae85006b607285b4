package drivers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
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
// 124's ChaState). A row with all set reads every instance of its model
// and reports the extreme over them (the highest of the _max names, the
// lowest of the _min names): one model 804 per string, 805 per module.
var sunspecMap = []struct {
	model uint16
	point string
	name  string
	all   bool
}{
	{model: 802, point: "SoC", name: "soc_pct"},
	{model: 802, point: "W", name: "power_w"},
	{model: 802, point: "V", name: "battery_v"},
	{model: 802, point: "A", name: "battery_a"},
	{model: 802, point: "CellVMax", name: "cell_v_max"},
	{model: 802, point: "CellVMin", name: "cell_v_min"},
	{model: 802, point: "SoH", name: "soh_pct"},
	// Charge status (ChaSt: 3 discharging, 4 charging), checked against
	// the sign of power_w.
	{model: 802, point: "ChaSt", name: "charge_state"},
	// Control mode (LocRemCtl: 0 REMOTE, 1 LOCAL): under local control
	// the battery runs its own logic whatever model 124 commands.
	{model: 802, point: "LocRemCtl", name: LocalControlPoint},
	{model: 124, point: "ChaState", name: "soc_pct"},
	{model: 124, point: "ChaSt", name: "charge_state"},
	{model: 124, point: "InBatV", name: "battery_v"},
	// Cell temperature: the bank's module extremes (803) first, one read
	// for the whole bank; then the strings' (804), then the modules' own
	// cell extremes (805).
	{model: 803, point: "ModTmpMax", name: "cell_temp_c_max"},
	{model: 803, point: "ModTmpMin", name: "cell_temp_c_min"},
	{model: 804, point: "ModTmpMax", name: "cell_temp_c_max", all: true},
	{model: 804, point: "ModTmpMin", name: "cell_temp_c_min", all: true},
	{model: 805, point: "CellTmpMax", name: "cell_temp_c_max", all: true},
	{model: 805, point: "CellTmpMin", name: "cell_temp_c_min", all: true},
	{model: 103, point: "W", name: "ac_power_w"},
	{model: 103, point: "Hz", name: "ac_hz"},
	{model: 103, point: "PhVphA", name: "ac_v"},
	{model: 103, point: "A", name: "ac_a"},
	{model: 103, point: "WH", name: "ac_energy_wh"},
	{model: 103, point: "DCW", name: "dc_power_w"},
	{model: 103, point: "TmpCab", name: "temp_c"},
	{model: 103, point: "TmpSnk", name: "temp_sink_c"},
	{model: 101, point: "W", name: "ac_power_w"},
	{model: 101, point: "Hz", name: "ac_hz"},
	{model: 101, point: "PhVphA", name: "ac_v"},
	{model: 101, point: "A", name: "ac_a"},
	{model: 101, point: "WH", name: "ac_energy_wh"},
	{model: 101, point: "DCW", name: "dc_power_w"},
	{model: 101, point: "TmpCab", name: "temp_c"},
	{model: 101, point: "TmpSnk", name: "temp_sink_c"},
	{model: 102, point: "W", name: "ac_power_w"},
	{model: 102, point: "Hz", name: "ac_hz"},
	{model: 102, point: "PhVphA", name: "ac_v"},
	{model: 102, point: "A", name: "ac_a"},
	{model: 102, point: "WH", name: "ac_energy_wh"},
	{model: 102, point: "DCW", name: "dc_power_w"},
	{model: 102, point: "TmpCab", name: "temp_c"},
	{model: 102, point: "TmpSnk", name: "temp_sink_c"},
	// Meters, at the site's grid connection: total real power, turned to
	// hearth's sign (positive exporting) by the device's meter sign, and
	// the energy counters.
	{model: 201, point: "W", name: GridPowerPoint},
	{model: 202, point: "W", name: GridPowerPoint},
	{model: 203, point: "W", name: GridPowerPoint},
	{model: 204, point: "W", name: GridPowerPoint},
	{model: 201, point: "TotWhImp", name: "grid_import_wh"},
	{model: 202, point: "TotWhImp", name: "grid_import_wh"},
	{model: 203, point: "TotWhImp", name: "grid_import_wh"},
	{model: 204, point: "TotWhImp", name: "grid_import_wh"},
	{model: 201, point: "TotWhExp", name: "grid_export_wh"},
	{model: 202, point: "TotWhExp", name: "grid_export_wh"},
	{model: 203, point: "TotWhExp", name: "grid_export_wh"},
	{model: 204, point: "TotWhExp", name: "grid_export_wh"},
}

// GridPowerPoint is the point a SunSpec meter (models 201-204) gives for
// power at the grid connection, positive exporting: the one point a
// SunSpec device can serve as safety.meter_point.
const GridPowerPoint = "grid_power_w"

// LocalControlPoint is the point a SunSpec battery (model 802 LocRemCtl)
// gives for its control mode, the enumeration as read: 0 REMOTE (it
// follows model 124 commands), 1 LOCAL (it runs its own logic, whatever
// model 124 commands).
const LocalControlPoint = "local_control"

// LocRemCtl values (model 802).
const (
	locRemCtlRemote = 0
	locRemCtlLocal  = 1
)

// LocalControlHint says what to change on a battery under local control.
const LocalControlHint = "set the battery's control mode to remote (SunSpec model 802 LocRemCtl) on the inverter or battery"

// LocalControlError is the refusal for a battery whose model 802
// LocRemCtl reads raw: nil for REMOTE or any other value, else an error
// wrapping ErrPrecondition with LocalControlHint.
func LocalControlError(raw uint16) error {
	if raw != locRemCtlLocal {
		return nil
	}
	return fmt.Errorf("LocRemCtl reads %d (LOCAL), control needs %d (REMOTE): %s: %w", raw, locRemCtlRemote, LocalControlHint, ErrPrecondition)
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

	// meterExportPositive: the device's meter models sign W positive
	// exporting (Profile.MeterSign); fixed at construction.
	meterExportPositive bool

	// The poll plan, made after discovery: the points a poll decodes,
	// the registers read every poll (specs, plan), and the static
	// registers read at discovery, every StaticRefresh and when a value
	// looks mis-scaled (statics, staticPlan): scale factors, ratings and
	// model 1's strings.
	wanted     []wantedPoint
	specs      []PointSpec
	plan       []ReadRequest
	statics    []PointSpec
	staticPlan []ReadRequest
	static     map[uint16]uint16  // the static registers as last read; nil: read them next poll
	staticAt   time.Time          // when they were read, by Poll's clock
	lastRaw    map[uint16]float64 // each scaled point's raw value at the last poll, by address
	oorRaw     map[uint16]float64 // raw values out of range at scale factors read in the same poll
	fallback   map[string]bool    // names whose first model said not_implemented
	// The registers whose power-of-ten step a static read found to be
	// the value's own move (the static registers as kept), and when: a
	// step of the same register within ScaleJumpHoldOff of it defers its
	// static read (jumpDeferred) to the hold-off's end. A step of any
	// other register is read at once.
	falseJumpAt  map[uint16]time.Time
	jumpDeferred map[uint16]bool
	rating       ratings
	seen         seenPoints // points that have carried a value

	// Registers the device refused (holes.go); poll goroutine only. Both
	// plans are made around them.
	holes     []Hole
	holeStore HoleStore
	readOK    map[[2]uint16]bool // planned reads (points' or statics') that have read whole since discovery
	replan    bool               // holes learned: plan again
	// Discovery back-off for a device that answers but cannot be
	// discovered.
	discoveryFailed int
	nextDiscovery   time.Time
	discoveryErr    error
}

// StaticRefresh is how often a SunSpec poll reads the device's static
// registers again (scale factors, ratings, model 1's strings); between
// refreshes it reads only the points' own registers. A poll also reads
// them at once, before it publishes, when a value looks mis-scaled: it
// decodes out of its physical range, a scale factor its reads carry
// anyway differs from the one kept, or a scaled register moved by a power
// of ten since the last poll (rate-limited: ScaleJumpHoldOff). A scale
// factor that changes without any of these is used at its old value for
// at most StaticRefresh.
const StaticRefresh = time.Minute

// ScaleJumpHoldOff rate-limits the power-of-ten check (StaticRefresh): a
// value that swings by ten between polls (a house load flipping between
// 200 and 2000 W) looks like a scale factor step every poll. After a
// static read made for such a step finds the static registers as kept,
// the steps of the same registers seen within ScaleJumpHoldOff do not read
// them at once: one static read at the hold-off's end answers them all.
// The hold-off is each register's own: a step of a register that has not
// swung by ten on its own (a temperature, while the power flips) is read
// at once. A scale factor that changes during the hold-off, with none of
// the other checks seeing it, is used at its old value for at most
// ScaleJumpHoldOff, and only by the registers held off.
const ScaleJumpHoldOff = 10 * time.Second

// SunSpecOption configures a SunSpecDevice.
type SunSpecOption func(*SunSpecDevice)

// WithProfile applies the settings of the device's discovery profile: its
// meter_sign. A nil profile changes nothing.
func WithProfile(p *Profile) SunSpecOption {
	return func(d *SunSpecDevice) {
		if p != nil {
			d.meterExportPositive = p.MeterSign == MeterExportPositive
		}
	}
}

// NewSunSpecDevice returns a device on bus at unit. Discovery happens on the
// first Poll, and again after a failed one.
func NewSunSpecDevice(name string, bus *Bus, unit uint8, opts ...SunSpecOption) *SunSpecDevice {
	d := &SunSpecDevice{name: name, bus: bus, unit: unit, seen: seenPoints{}}
	for _, o := range opts {
		o(d)
	}
	return d
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

// Discover finds the SunS marker, walks the model chain to its end and
// reads model 1's identity (split where the device refuses a register of
// model 1, as a poll's reads are).
func (d *SunSpecDevice) Discover(ctx context.Context) error {
	if err := d.discoverChain(ctx); err != nil {
		return err
	}
	_, err := d.readIdentity(ctx, nil)
	return err
}

// discover is a poll's discovery: the model chain, then the identity, read
// around the holes kept for the device's name (a restart does not ask
// again for what it refused). The kept holes are the device's when they
// were learned from the same identity; those the identity read was
// refused are learned. Then the polls are planned around them.
func (d *SunSpecDevice) discover(ctx context.Context, now time.Time) error {
	if err := d.discoverChain(ctx); err != nil {
		return err
	}
	kept := d.keptHoles(now)
	learned, err := d.readIdentity(ctx, kept.Holes)
	if err != nil {
		return err
	}
	d.holes = nil
	if kept.Identity == d.Identity() {
		d.holes = slices.Clone(kept.Holes)
	}
	d.readOK = nil // what read before was another map's
	if len(learned) > 0 {
		d.learn(learned, now)
	}
	d.planPoll()
	return nil
}

// readIdentity reads model 1's strings into the device's identity, in
// reads that bridge none of holes, each split where the device refuses it
// (readSplitting). It returns the registers found refused; a string the
// device refuses is empty.
func (d *SunSpecDevice) readIdentity(ctx context.Context, holes []Hole) ([]Hole, error) {
	m, ok := d.model(1)
	if !ok {
		return nil, nil
	}
	var specs []PointSpec
	def := sunspec.Lookup(1)
	for _, name := range identityPoints {
		if sp, ok := modelPoint(m, def, name); ok {
			specs = append(specs, sp)
		}
	}
	vals := map[uint16]uint16{}
	var learned []Hole
	// Plan, not planAround: the kept holes are not yet known to be this
	// device's, and a string left out because another device refused it
	// would read as empty, as that device's did, and let its holes pass
	// as this one's.
	for _, rq := range Plan(specs, holes, MaxReadRegisters) {
		got := readSplitting(ctx, d.bus, d.unit, specs, rq)
		if got.err != nil {
			return nil, fmt.Errorf("read common model: %w", got.err)
		}
		learned = append(learned, got.holes...)
		got.own(specs, vals)
	}
	id := identityOf(blockOf(m, vals))
	d.mu.Lock()
	d.identity = id
	d.mu.Unlock()
	return learned, nil
}

// modelPoint returns point name of model m (definition def) as a planner
// point at its absolute address; false when the device's model is too
// short to hold it.
func modelPoint(m ModelInstance, def *sunspec.Model, name string) (PointSpec, bool) {
	p, ok := def.Point(name)
	if !ok || int(p.Offset)+int(p.Size) > int(m.Length)+2 {
		return PointSpec{}, false
	}
	return PointSpec{Name: name, Address: m.Address + p.Offset, Table: Holding, Type: "string", Length: p.Size}, true
}

// discoverChain finds the SunS marker and walks the model chain.
func (d *SunSpecDevice) discoverChain(ctx context.Context) error {
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
	return nil
}

// identityPoints are model 1's strings an Identity holds.
var identityPoints = []string{"Mn", "Md", "Vr", "SN"}

// identityOf decodes model 1's strings from its registers (from the ID
// register on); a string the registers do not reach is empty.
func identityOf(regs []uint16) Identity {
	def := sunspec.Lookup(1)
	str := func(point string) string {
		p, _ := def.Point(point)
		if int(p.Offset+p.Size) > len(regs) {
			return ""
		}
		return sunspec.String(regs[p.Offset : p.Offset+p.Size])
	}
	return Identity{Manufacturer: str("Mn"), Model: str("Md"), Serial: str("SN"), Firmware: str("Vr")}
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

// instances returns every instance of model id, in chain order.
func (d *SunSpecDevice) instances(id uint16) []ModelInstance {
	var out []ModelInstance
	for _, m := range d.models {
		if m.ID == id {
			out = append(out, m)
		}
	}
	return out
}

// ratings are a device's power ratings in watts, 0 when it gives none.
type ratings struct {
	battery  float64 // largest of 124 WChaMax, 802 WChaRteMax and WDisChaRteMax, 120 MaxChaRte and MaxDisChaRte
	inverter float64 // largest of 120 WRtg and 121 WMax
}

// ratingPoints are the points ratings are read from, by model.
var ratingPoints = []struct {
	model    uint16
	point    string
	inverter bool
}{
	{model: 120, point: "WRtg", inverter: true},
	{model: 120, point: "MaxChaRte"},
	{model: 120, point: "MaxDisChaRte"},
	{model: 121, point: "WMax", inverter: true},
	{model: 124, point: "WChaMax"},
	{model: 802, point: "WChaRteMax"},
	{model: 802, point: "WDisChaRteMax"},
}

// ratingsOf decodes the ratings from the static registers: nameplate
// values, and settings a device rarely changes.
func (d *SunSpecDevice) ratingsOf(vals map[uint16]uint16) ratings {
	var rt ratings
	for _, rp := range ratingPoints {
		m, ok := d.model(rp.model)
		if !ok {
			continue
		}
		def := sunspec.Lookup(rp.model)
		pd, _ := def.Point(rp.point)
		v := decodeAt(def, pd, 0, blockOf(m, vals))
		if !v.Good() || v.Value <= 0 || math.IsInf(v.Value, 0) {
			continue
		}
		if rp.inverter {
			rt.inverter = max(rt.inverter, v.Value)
		} else {
			rt.battery = max(rt.battery, v.Value)
		}
	}
	return rt
}

// blocks returns blockOf over vals, each model's block made once.
func blocks(vals map[uint16]uint16) func(ModelInstance) []uint16 {
	made := map[uint16][]uint16{}
	return func(m ModelInstance) []uint16 {
		blk, ok := made[m.Address]
		if !ok {
			blk = blockOf(m, vals)
			made[m.Address] = blk
		}
		return blk
	}
}

// blockOf returns model m's registers, from its ID register on, taken
// from vals (by address); registers vals does not hold are 0.
func blockOf(m ModelInstance, vals map[uint16]uint16) []uint16 {
	blk := make([]uint16, int(m.Length)+2)
	for i := range blk {
		blk[i] = vals[m.Address+uint16(i)]
	}
	return blk
}

// ratingFor returns the rating a power point is judged against: the
// battery's for power_w (the inverter's when the battery gives none), the
// inverter's for its AC and DC power. A meter's grid power measures the
// whole site, which no device rating bounds: 0, the fixed bound.
func (rt ratings) ratingFor(name string) float64 {
	switch {
	case name == "power_w":
		if rt.battery > 0 {
			return rt.battery
		}
		return rt.inverter
	case name == "ac_power_w" || name == "dc_power_w" || strings.HasPrefix(name, "mppt") && strings.HasSuffix(name, "_dc_w"):
		return rt.inverter
	}
	return 0
}

// Poll reads the points hearth maps in the reads the planner finds
// cheapest on the bus (PollPlan), decodes them with the static registers
// (scale factors, ratings) read at discovery and every StaticRefresh
// (StaticPlan), and returns a reading. When a value looks mis-scaled (see
// StaticRefresh) it reads the static registers before it decodes, and the
// points again when those changed. Both plans are read around the registers the device refuses
// (holes.go): a read refused with exception 2 is split and what it refused
// learned, and a point whose own registers or scale factor's are refused
// is not_implemented. When the device cannot be read, every point it
// would have given carries quality comm_error, and the error is returned
// too. A value outside its physical range (BuiltinRange, power judged
// against the ratings) is out_of_range; a point that has carried values
// and then reads as not implemented is comm_error. Poll is for one
// goroutine at a time.
func (d *SunSpecDevice) Poll(ctx context.Context, now func() time.Time) (hearth.Reading, error) {
	r := hearth.Reading{Device: d.name, Points: map[string]hearth.Point{}}
	fail := func(err error, rediscover bool) (hearth.Reading, error) {
		if rediscover {
			d.forgetModels()
		}
		r.Time = now()
		commError(r.Points, SunSpecPointNames())
		return r, err
	}
	if d.models == nil {
		if err := d.discoveryDue(now()); err != nil {
			return fail(err, false)
		}
		err := d.discover(ctx, now())
		d.discovered(err, now())
		if err != nil {
			return fail(err, true)
		}
	}
	at := now()
	fresh := false // the static registers were read in this poll
	if d.static == nil || at.Sub(d.staticAt) >= StaticRefresh || at.Before(d.staticAt) ||
		d.deferredDue(at) {
		if _, rediscover, err := d.refreshStatics(ctx, at, nil); err != nil {
			return fail(err, rediscover)
		}
		fresh = true
	}
	vals, okSpec, rediscover, firstErr := d.readPoints(ctx, at)
	raws := d.scaledRaws(vals, okSpec)
	if !fresh && !rediscover {
		why, jumped := d.misScaled(vals, okSpec, raws)
		if why == scaleJumped && d.jumpsHeldOff(jumped, at) {
			if d.jumpDeferred == nil {
				d.jumpDeferred = map[uint16]bool{}
			}
			for _, a := range jumped {
				d.jumpDeferred[a] = true
			}
			why = scaleKept
		}
		if why != scaleKept {
			changed, again, err := d.refreshStatics(ctx, at, jumped)
			if err != nil {
				return fail(err, again)
			}
			fresh = true
			if changed {
				vals, okSpec, rediscover, firstErr = d.readPoints(ctx, at)
				raws = d.scaledRaws(vals, okSpec)
			}
		}
	}
	if fresh {
		d.oorRaw = map[uint16]float64{}
	}
	block := blocks(vals)
	// Each name's point: the first model's, or a later model's when the
	// first gave none; the instances of one model combined.
	type found struct {
		p              hearth.Point
		model, primary uint16 // the model it came from; the name's first model
	}
	got := map[string]found{}
	var order []string
	for _, w := range d.wanted {
		p := hearth.Q(hearth.QualityCommError)
		switch {
		case d.lacks(w):
			// The device refuses the point's registers, or its scale
			// factor's: it does not have the point.
			p = hearth.Q(hearth.QualityNotImplemented)
		case okSpec[w.spec]:
			p = d.decode(w, block(w.model))
		}
		if a := d.specs[w.spec].Address; fresh && p.Quality == hearth.QualityOutOfRange && w.sfSpec >= 0 {
			if raw, ok := raws[a]; ok {
				d.oorRaw[a] = raw
			}
		}
		cur, ok := got[w.name]
		switch {
		case !ok: // wanted points come in sunspecMap's order: this is the first model
			order = append(order, w.name)
			got[w.name] = found{p, w.model.ID, w.model.ID}
		case cur.model == w.model.ID:
			got[w.name] = found{combine(w.name, cur.p, p), cur.model, cur.primary}
		case !cur.p.Good():
			got[w.name] = found{p, w.model.ID, cur.primary}
		}
	}
	d.lastRaw = raws
	refall := false
	for _, name := range order {
		f := got[name]
		p := d.seen.vet(name, f.p)
		r.Points[name] = p
		if p.Quality == hearth.QualityNotImplemented && f.model == f.primary && !d.fallback[name] {
			// Read the next model's point for this name from the next cycle.
			if d.fallback == nil {
				d.fallback = map[string]bool{}
			}
			d.fallback[name] = true
			refall = true
		}
	}
	if refall || d.replan {
		d.planPoll()
	}
	r.Time = now()
	if rediscover {
		// A failed read may mean the map changed (firmware update, other
		// device at the address): discover again next time. An exception
		// is an answer: the device is there, and only a refusal of what
		// it served before says its map may have moved.
		d.forgetModels()
	}
	return r, firstErr
}

// readPoints makes the reads of the poll plan (readPlanned). It returns
// the registers read by address over the static registers as kept (a
// read's register wins: it is newer), which of the specs were read,
// whether a failure says the map may have changed, and the first error.
func (d *SunSpecDevice) readPoints(ctx context.Context, now time.Time) (vals map[uint16]uint16, okSpec []bool, rediscover bool, firstErr error) {
	vals = make(map[uint16]uint16, len(d.static)+2*len(d.specs))
	for a, v := range d.static {
		vals[a] = v
	}
	okSpec = make([]bool, len(d.specs))
	for _, rq := range d.plan {
		got, changed := d.readPlanned(ctx, d.specs, rq, now)
		rediscover = rediscover || changed
		if got.err != nil && firstErr == nil {
			firstErr = got.err
		}
		got.all(vals)
		for i := range got.regs {
			okSpec[i] = true
		}
	}
	return vals, okSpec, rediscover, firstErr
}

// readStatics reads the static registers (readPlanned: a refused one is
// learned as a hole and left out, and the points that need it are
// not_implemented), keeps them and the ratings they give, and takes model
// 1's identity from them. Any other failure is returned, with whether it
// says the map may have changed. A serial number that differs from the
// one discovered means another device answers at the address: an error
// that rediscovers it.
func (d *SunSpecDevice) readStatics(ctx context.Context, now time.Time) (rediscover bool, err error) {
	vals := map[uint16]uint16{}
	for _, rq := range d.staticPlan {
		got, changed := d.readPlanned(ctx, d.statics, rq, now)
		if got.err != nil {
			return changed, fmt.Errorf("read static registers at %d: %w", rq.Addr, got.err)
		}
		got.own(d.statics, vals) // the static registers only, not the gaps bridged
	}
	if m, ok := d.model(1); ok {
		id := identityOf(blockOf(m, vals))
		d.mu.Lock()
		prev := d.identity
		d.identity = id
		d.mu.Unlock()
		if prev.Serial != "" && id.Serial != prev.Serial {
			return true, fmt.Errorf("serial number changed from %q to %q: another device at unit %d", prev.Serial, id.Serial, d.unit)
		}
	}
	d.static, d.rating = vals, d.ratingsOf(vals)
	if d.replan {
		// Plan the points' reads around what the statics taught before
		// they are read.
		d.planPoll()
	}
	return false, nil
}

// refreshStatics reads the static registers (readStatics) and reports
// whether they changed from those kept, or the plans did (holes learned):
// the points read before it must then be read again. jumped are the
// registers whose power-of-ten step asked for the read: when nothing
// changed, their steps were the values' own and their hold-offs
// (ScaleJumpHoldOff) start. Any static read answers the deferred steps,
// whose hold-offs start again when nothing changed.
func (d *SunSpecDevice) refreshStatics(ctx context.Context, at time.Time, jumped []uint16) (changed, rediscover bool, err error) {
	kept, holes := d.static, len(d.holes)
	if rediscover, err := d.readStatics(ctx, at); err != nil {
		return false, rediscover, err
	}
	deferred := d.jumpDeferred
	d.staticAt, d.jumpDeferred = at, nil
	changed = !maps.Equal(kept, d.static) || len(d.holes) != holes
	if changed {
		d.falseJumpAt = nil
		return true, false, nil
	}
	if d.falseJumpAt == nil && (len(jumped) > 0 || len(deferred) > 0) {
		d.falseJumpAt = map[uint16]time.Time{}
	}
	for _, a := range jumped {
		d.falseJumpAt[a] = at
	}
	for a := range deferred {
		d.falseJumpAt[a] = at
	}
	return false, false, nil
}

// jumpHeldOff reports whether a power-of-ten step of the register at a,
// at now, falls within ScaleJumpHoldOff of one of its own that a static
// read found to be the value's move. A clock that stepped back ends the
// hold-off.
func (d *SunSpecDevice) jumpHeldOff(a uint16, now time.Time) bool {
	at, ok := d.falseJumpAt[a]
	return ok && !now.Before(at) && now.Sub(at) < ScaleJumpHoldOff
}

// jumpsHeldOff reports whether the steps of every register in jumped
// are held off (jumpHeldOff): a single one that is not asks for a static
// read at once.
func (d *SunSpecDevice) jumpsHeldOff(jumped []uint16, now time.Time) bool {
	for _, a := range jumped {
		if !d.jumpHeldOff(a, now) {
			return false
		}
	}
	return len(jumped) > 0
}

// deferredDue reports whether a deferred step's hold-off has ended at
// now: its static read is due.
func (d *SunSpecDevice) deferredDue(now time.Time) bool {
	for a := range d.jumpDeferred {
		if !d.jumpHeldOff(a, now) {
			return true
		}
	}
	return false
}

// lacks reports whether the device refuses a register point w needs:
// its own or its scale factor's.
func (d *SunSpecDevice) lacks(w wantedPoint) bool {
	return inHoles(d.holes, d.specs[w.spec]) || w.sfSpec >= 0 && inHoles(d.holes, d.statics[w.sfSpec])
}

// scaleCheck is what misScaled found.
type scaleCheck int

const (
	scaleKept   scaleCheck = iota // nothing says a scale factor changed
	scaleWrong                    // a carried scale factor differs, or a value decodes out of range
	scaleJumped                   // only a power-of-ten step: a scale factor's, or the value's own
)

// misScaled reports whether a poll's registers look decoded with a scale
// factor that has changed: scaleWrong when a scale factor a read carried
// differs from the one kept or a scaled point decodes out of its physical
// range (unless it did so with the same raw value right after the scale
// factors were read: a broken value does not cost a read every poll);
// else scaleJumped when a scaled register moved by a power of ten
// (within 25 %) since the last poll from at least 10 counts, as a steady
// value does when its scale factor steps, and as a value that swings by
// ten does too; jumped are then the registers that stepped, by address.
// raws are the poll's scaledRaws.
func (d *SunSpecDevice) misScaled(vals map[uint16]uint16, okSpec []bool, raws map[uint16]float64) (why scaleCheck, jumped []uint16) {
	for a, v := range d.static {
		if vals[a] != v {
			return scaleWrong, nil
		}
	}
	block := blocks(vals)
	for _, w := range d.wanted {
		if w.sfSpec < 0 || !okSpec[w.spec] || d.lacks(w) {
			continue
		}
		if known, ok := d.oorRaw[d.specs[w.spec].Address]; ok && known == raws[d.specs[w.spec].Address] {
			continue // out of range at the scale factor read with it: a broken value, not a stale scale
		}
		if d.decode(w, block(w.model)).Quality == hearth.QualityOutOfRange {
			return scaleWrong, nil
		}
	}
	for a, cur := range raws {
		prev, ok := d.lastRaw[a]
		lo, hi := min(math.Abs(prev), math.Abs(cur)), max(math.Abs(prev), math.Abs(cur))
		if !ok || lo < 10 {
			continue
		}
		if k := math.Log10(hi / lo); k > 0.9 && math.Abs(k-math.Round(k)) < math.Log10(1.25) {
			jumped = append(jumped, a)
		}
	}
	if len(jumped) > 0 {
		return scaleJumped, jumped
	}
	return scaleKept, nil
}

// scaledRaws returns the raw value of each scaled point read, by address;
// sentinels are left out.
func (d *SunSpecDevice) scaledRaws(vals map[uint16]uint16, okSpec []bool) map[uint16]float64 {
	out := map[uint16]float64{}
	for _, w := range d.wanted {
		if w.sfSpec < 0 || !okSpec[w.spec] || w.point.Type == "string" || d.lacks(w) {
			continue
		}
		a := d.specs[w.spec].Address
		raw := make([]uint16, w.point.Size)
		for i := range raw {
			raw[i] = vals[a+uint16(i)]
		}
		if !sunspec.IsNotImplemented(w.point.Type, raw) {
			out[a] = sunspec.Raw(w.point.Type, raw)
		}
	}
	return out
}

// forgetModels drops the model chain, so the next Poll discovers again.
func (d *SunSpecDevice) forgetModels() {
	d.mu.Lock()
	d.models = nil
	d.mu.Unlock()
	d.static = nil
	d.falseJumpAt, d.jumpDeferred = nil, nil
}

// decode decodes one wanted point from its model's registers: scale
// factor, sentinels, hearth's sign for a meter's power, and the point's
// physical range.
func (d *SunSpecDevice) decode(w wantedPoint, regs []uint16) hearth.Point {
	p := decodeAt(w.def, w.point, w.base, regs)
	if w.meterPower && !d.meterExportPositive && p.Good() && p.Value != 0 {
		p.Value = -p.Value // import-positive meter: hearth's grid power is positive exporting
	}
	r, ok := BuiltinRange(w.name, d.rating.ratingFor(w.name))
	return plausible(p, r, ok)
}

// combine joins one point of two instances of a model: a point that could
// not be read, or was read out of range, stands for them all (the unread
// module may be the hot one); else the extreme of the good values (highest
// of a _max name, lowest otherwise); not_implemented only when neither has
// a value.
func combine(name string, a, b hearth.Point) hearth.Point {
	bad := func(p hearth.Point) bool { return !p.Good() && p.Quality != hearth.QualityNotImplemented }
	switch {
	case bad(a):
		return a
	case bad(b):
		return b
	case !a.Good():
		return b
	case !b.Good():
		return a
	case strings.HasSuffix(name, "_max"):
		return hearth.V(max(a.Value, b.Value))
	}
	return hearth.V(min(a.Value, b.Value))
}

// wantedPoint is one point a SunSpec poll decodes.
type wantedPoint struct {
	name       string
	model      ModelInstance
	def        *sunspec.Model
	point      sunspec.PointDef
	base       uint16 // offset of the point's block (a repetition) from the model's ID
	spec       int    // index of the point's registers in specs
	sfSpec     int    // index of its scale factor's in statics, or -1
	primary    bool   // the first model that gives this name
	meterPower bool   // a meter model's W, signed by the device's meter sign
}

// Most MPPT modules (model 160 repetitions) read: enough for any
// residential inverter.
const maxMPPTModules = 16

// planPoll lists the points a poll decodes and plans the reads: their
// own registers every poll (specs, plan), and the static registers
// (statics, staticPlan): their scale factors, the ratings with theirs,
// and model 1's strings. A name comes from the first model in sunspecMap's
// order the device has; the next model is read for it too once the first
// said not_implemented.
func (d *SunSpecDevice) planPoll() {
	var wanted []wantedPoint
	var specs, statics []PointSpec
	at := map[uint16]int{}       // spec index by address
	staticAt := map[uint16]int{} // static spec index by address
	spec := func(list *[]PointSpec, idx map[uint16]int, addr, size uint16, name string) int {
		if i, ok := idx[addr]; ok {
			return i
		}
		idx[addr] = len(*list)
		*list = append(*list, PointSpec{Name: name, Address: addr, Table: Holding, Type: "string", Length: size})
		return len(*list) - 1
	}
	static := func(m ModelInstance, def *sunspec.Model, name string) (int, bool) {
		sp, ok := modelPoint(m, def, name)
		if !ok {
			return -1, false
		}
		return spec(&statics, staticAt, sp.Address, sp.Size(), name), true
	}
	add := func(name string, m ModelInstance, def *sunspec.Model, p sunspec.PointDef, base uint16, primary bool) {
		if int(base)+int(p.Offset)+int(p.Size) > int(m.Length)+2 {
			return // the device's model is shorter than the definition
		}
		w := wantedPoint{name: name, model: m, def: def, point: p, base: base, sfSpec: -1, primary: primary,
			meterPower: name == GridPowerPoint && m.ID >= 201 && m.ID <= 204}
		if p.SF != "" {
			i, ok := static(m, def, p.SF)
			if !ok {
				return
			}
			w.sfSpec = i
		}
		w.spec = spec(&specs, at, m.Address+base+p.Offset, p.Size, name)
		wanted = append(wanted, w)
	}
	taken := map[string]bool{}
	for _, row := range sunspecMap {
		insts := d.instances(row.model)
		if len(insts) == 0 || (taken[row.name] && !d.fallback[row.name]) {
			continue
		}
		def := sunspec.Lookup(row.model)
		p, ok := def.Point(row.point)
		if !ok {
			continue
		}
		if !row.all {
			insts = insts[:1]
		}
		primary := !taken[row.name]
		for _, m := range insts {
			add(row.name, m, def, p, 0, primary)
		}
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
	for _, rp := range ratingPoints {
		if m, ok := d.model(rp.model); ok {
			def := sunspec.Lookup(rp.model)
			if p, ok := def.Point(rp.point); ok {
				if _, ok := static(m, def, rp.point); ok {
					static(m, def, p.SF)
				}
			}
		}
	}
	if m, ok := d.model(1); ok {
		for _, name := range identityPoints {
			static(m, sunspec.Lookup(1), name)
		}
	}
	// A read may bridge into the next model's header; it bridges no
	// register the device refused (holes.go).
	d.wanted, d.specs, d.statics = wanted, specs, statics
	d.plan, d.staticPlan = planAround(specs, d.holes, MaxReadRegisters), planAround(statics, d.holes, MaxReadRegisters)
	d.replan = false
	for _, sp := range statics {
		if _, ok := d.static[sp.Address]; !ok && !inHoles(d.holes, sp) {
			d.static = nil // a static register not read yet: read them all next poll
			break
		}
	}
}

// PollPlan returns, after discovery, the registers every poll reads (the
// points', as planner points) and the reads that carry them.
func (d *SunSpecDevice) PollPlan() ([]PointSpec, []ReadRequest) { return d.specs, d.plan }

// StaticPlan returns, after discovery, the static registers (scale
// factors, ratings, model 1's strings) and the reads that carry them, made
// at discovery, every StaticRefresh and when a value looks mis-scaled.
func (d *SunSpecDevice) StaticPlan() ([]PointSpec, []ReadRequest) { return d.statics, d.staticPlan }

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
	// LocalControl says model 802 LocRemCtl reads LOCAL: the battery
	// runs its own logic, whatever model 124 commands.
	LocalControl bool `json:"local_control,omitempty"`
}

// ScanUnit asks unit whether it is there and whether it speaks SunSpec,
// and a SunSpec battery (model 802) whether it is under local control.
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
		if m, ok := d.model(802); ok {
			p, _ := sunspec.Lookup(802).Point("LocRemCtl")
			if p.Offset < m.Length+2 {
				regs, err := bus.Read(ctx, unit, Holding, m.Address+p.Offset, 1)
				res.LocalControl = err == nil && LocalControlError(regs[0]) != nil
			}
		}
	}
	return res, true
}
