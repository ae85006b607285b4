package drivers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/goburrow/modbus"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/safety"
)

// ErrPrecondition is returned when a device setting a profile requires for
// control reads another value; the error carries the profile's hint.
var ErrPrecondition = errors.New("device not set up for control")

// UnguardedRefresh is the revert period given to the control loop for a
// device without a timeout of its own: the loop re-sends its command at a
// third of it, so a device that lost a write (or restarted) gets it back.
const UnguardedRefresh = time.Minute

// VendorStatus is what a vendor device holds after Apply, in hearth's
// sign (positive discharging).
type VendorStatus struct {
	// CommandedW is the power the written registers stand for: the
	// approved power, clamped to what the registers carry (Saturated).
	CommandedW float64 `json:"commanded_w"`
	// HeldW is the power the device holds: CommandedW after a write, the
	// last written power when the write budget deferred this one.
	HeldW     float64 `json:"held_w"`
	Saturated bool    `json:"saturated,omitempty"`
	// Deferred says the write budget held the previous command.
	Deferred bool `json:"deferred,omitempty"`
	// Written are the points written, in order, with their values.
	Written []PointValue `json:"written,omitempty"`
	// Readback are the written points as read back.
	Readback map[string]float64 `json:"readback,omitempty"`
}

// VendorDevice commands a battery through a profile's control section.
// It implements the control loop's device (name, Apply, RevertTimeout)
// for every vendor whose profile has one; its methods are safe for
// concurrent use, and its writes are serialised by the bus.
type VendorDevice struct {
	name string
	bus  *Bus
	unit uint8
	c    *Control
	pts  map[string]*PointSpec

	mu     sync.Mutex
	armed  bool
	budget *writeBudget
	// The conversion the last command was written at: the scale factors
	// of the written points and, for a setpoint in percent, the watts one
	// percent of the reference stood for. The budget holds a command only
	// while the device reads the same: the raw values it holds stand for
	// another power once either moved. (Amps are what the device runs
	// whatever the voltage, which moves with every reading.)
	wroteSFs map[string]int
	wrotePer float64
}

// NewVendorDevice returns the controls of a device on bus at unit, driven
// by p's control section (which must be there). now is the clock the
// write budget is kept by; nil: time.Now.
func NewVendorDevice(name string, bus *Bus, unit uint8, p *Profile, now func() time.Time) *VendorDevice {
	d := &VendorDevice{name: name, bus: bus, unit: unit, c: p.Control, pts: map[string]*PointSpec{}}
	for i := range p.Points {
		d.pts[p.Points[i].Name] = &p.Points[i]
	}
	var timeout time.Duration
	if d.c.Guarded() {
		timeout = d.RevertTimeout()
	}
	d.budget = newWriteBudget(d.c.Budget, timeout, now)
	return d
}

// Name returns the device's name.
func (d *VendorDevice) Name() string { return d.name }

// Guarded reports whether the device reverts by itself when commands stop.
func (d *VendorDevice) Guarded() bool { return d.c.Guarded() }

// RevertTimeout is the device's own timeout as the device holds it: for
// kind register, the value written, rounded up to the point's unit and
// resolution (90s in a point counting minutes is 2 minutes); for kind
// setting, the profile's value. The control loop counts a device it can
// no longer reach at its last command until this has passed (site limits
// depend on it), so it is never shorter than what the device runs. For a
// device without a timeout it is UnguardedRefresh: nothing lapses, the
// control loop takes it as the refresh period and the hold bound (Guarded
// false), and counts the device at its last command until a release reads
// back, never as released when this has passed.
func (d *VendorDevice) RevertTimeout() time.Duration {
	t := d.c.Timeout
	switch t.Kind {
	case TimeoutNone:
		return UnguardedRefresh
	case TimeoutRegister:
		pt := d.pts[t.Point]
		unit := time.Second
		if pt.Unit == "min" {
			unit = time.Minute
		}
		return time.Duration(timeoutIn(pt, t.Value.D()) * float64(unit))
	}
	return t.Value.D()
}

// HoldsUpTo is the longest the device may run its last command after the
// write: the timeout's lapses_within when the profile gives one, else
// RevertTimeout. The control loop counts a device it cannot reach at its
// last command for that long.
func (d *VendorDevice) HoldsUpTo() time.Duration {
	return max(d.RevertTimeout(), d.c.Timeout.LapsesWithin.D())
}

// Apply writes an approved command through the control section. ModeAuto
// releases (the release writes, or nothing for a passive release) and
// disarms; ModePower checks the required settings and arms once per
// lease, then writes the timeout, the power and the mode command, in that
// order, grouped as the profile says, and reads back what it wrote. A
// change the write budget defers writes nothing and reports Deferred with
// the power held. A read-back that differs returns ErrNotEffective; a
// setting that reads wrong returns ErrPrecondition with the profile's hint.
func (d *VendorDevice) Apply(ctx context.Context, a safety.Approved) (VendorStatus, error) {
	if !a.Valid() || a.Device() != d.name {
		return VendorStatus{}, fmt.Errorf("apply to %s: command %v is not approved for this device", d.name, a)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.Mode() == hearth.ModeAuto {
		d.armed = false
		d.budget.forget()
		if d.c.Release.Passive {
			return VendorStatus{}, nil
		}
		sfs, err := d.readScales(ctx, d.c.Release.Writes)
		if err != nil {
			return VendorStatus{}, fmt.Errorf("hand %s back: %w; nothing written", d.name, err)
		}
		st, err := d.writeAll(ctx, d.c.Release.Writes, sfs)
		if err != nil {
			return st, fmt.Errorf("hand %s back: %w", d.name, err)
		}
		return st, nil
	}
	want := float64(a.Power())
	per, err := d.wattsPerUnit(ctx)
	if err != nil {
		return VendorStatus{}, fmt.Errorf("command %s: %w; nothing written", d.name, err)
	}
	// The scale factors of the written points are read before every
	// command: a value is never written at a scale that changed since.
	sfs, err := d.readScales(ctx, d.c.commandWrites())
	if err != nil {
		return VendorStatus{}, fmt.Errorf("command %s: %w; nothing written", d.name, err)
	}
	writes, commanded, saturated := d.command(want, per, sfs)
	if d.sameScale(sfs, per) && d.budget.hold(commanded, a.Rule(), d.touchesBudget(writes)) {
		return VendorStatus{CommandedW: commanded, HeldW: d.budget.lastW, Saturated: saturated, Deferred: true}, nil
	}
	if !d.armed {
		if err := d.arm(ctx, sfs); err != nil {
			return VendorStatus{}, err
		}
		d.armed = true
	}
	got, err := d.writeAll(ctx, writes, sfs)
	got.CommandedW, got.HeldW, got.Saturated = commanded, commanded, saturated
	if err != nil && !errors.Is(err, ErrNotEffective) {
		d.budget.forget()
		return got, fmt.Errorf("command %s: %w", d.name, err)
	}
	d.budget.written(commanded, a.Rule())
	d.wroteSFs, d.wrotePer = sfs, per
	return got, err
}

// sameScale reports whether the scale factors and the reference just
// read are those the last command was written at.
func (d *VendorDevice) sameScale(sfs map[string]int, per float64) bool {
	return maps.Equal(sfs, d.wroteSFs) && (d.c.Setpoint.Unit != UnitPercent || per == d.wrotePer)
}

// command builds the writes for a power: the timeout (kind register),
// the power and the mode command last. It returns the power the writes
// stand for, clamped to what the power point carries.
func (d *VendorDevice) command(w, per float64, sfs map[string]int) (writes []PointValue, commanded float64, saturated bool) {
	c := d.c
	if c.Timeout.Kind == TimeoutRegister {
		pt := d.pts[c.Timeout.Point]
		writes = append(writes, PointValue{Point: pt.Name, Value: timeoutIn(pt, c.Timeout.Value.D())})
	}
	sp := c.Setpoint
	if sp.Style == StyleSigned {
		pt := d.pts[sp.Signed.Point]
		v := w / per
		if sp.Signed.Sign == "charge_positive" {
			v = -v
		}
		v, saturated = clampTo(pt, v, sfs[pt.SF])
		commanded = v * per
		if sp.Signed.Sign == "charge_positive" {
			commanded = -commanded
		}
		return append(writes, PointValue{Point: pt.Name, Value: v}), commanded, saturated
	}
	leg, sign := sp.Charge, -1.0
	switch {
	case w > 0:
		leg, sign = sp.Discharge, 1
	case w == 0 && sp.Zero != nil:
		leg = sp.Zero
	}
	if pts := leg.powerPoints(); len(pts) > 0 {
		// Every point of the leg carries the same value: the one all of
		// them take. A signed leg carries the power in its sign.
		v := math.Abs(w) / per
		switch leg.Sign {
		case "discharge_positive":
			v, sign = w/per, 1
		case "charge_positive":
			v, sign = -w/per, -1
		}
		for _, n := range pts {
			pt := d.pts[n]
			var sat bool
			v, sat = clampTo(pt, v, sfs[pt.SF])
			saturated = saturated || sat
		}
		for _, n := range pts {
			writes = append(writes, PointValue{Point: n, Value: v})
		}
		commanded = sign * v * per
	}
	writes = append(writes, leg.Also...)
	if leg.Mode != nil {
		writes = append(writes, *leg.Mode)
	}
	if commanded == 0 {
		commanded = 0 // not -0
	}
	return writes, commanded, saturated
}

// wattsPerUnit is what one unit of the setpoint registers stands for:
// 1 W (the points' own scale carries 0.01 kW and the like), the reference
// point's watts over 100 for a percentage, or the voltage point's volts
// for amps. A reference that does not read good, or reads 0 or less, is an
// error: nothing is written with an unknown conversion.
func (d *VendorDevice) wattsPerUnit(ctx context.Context) (float64, error) {
	sp := d.c.Setpoint
	if sp.Unit == "" || sp.Unit == UnitW {
		return 1, nil
	}
	v, err := d.readPoint(ctx, d.pts[sp.Reference])
	switch {
	case err != nil:
		return 0, fmt.Errorf("read the setpoint reference %s: %w", sp.Reference, err)
	case v <= 0 || math.IsInf(v, 0):
		return 0, fmt.Errorf("setpoint reference %s reads %g: no conversion from watts", sp.Reference, v)
	case sp.Unit == UnitPercent:
		return v / 100, nil
	}
	return v, nil // amps at the reference voltage
}

// clampTo bounds v to the point's min and max, and cuts it towards zero
// to the point's resolution (one raw step, at scale factor sf), so that
// the device is never asked for more than was approved.
func clampTo(pt *PointSpec, v float64, sf int) (float64, bool) {
	if pt.Type != "f32" && pt.Type != "f64" {
		step := math.Abs(cmpScale(pt.Scale)) * math.Pow10(sf)
		v = math.Trunc(v/step+math.Copysign(1e-9, v)) * step
	}
	if pt.Max != nil && v > *pt.Max {
		return *pt.Max, true
	}
	if pt.Min != nil && v < *pt.Min {
		return *pt.Min, true
	}
	return v, false
}

// touchesBudget reports whether writes include a flash or unknown point.
func (d *VendorDevice) touchesBudget(writes []PointValue) bool {
	for _, w := range writes {
		if storageOf(d.pts[w.Point]) != StorageRAM {
			return true
		}
	}
	return false
}

// arm reads the required settings and makes the arm writes the device
// does not already hold.
func (d *VendorDevice) arm(ctx context.Context, sfs map[string]int) error {
	unmet, err := d.unmet(ctx)
	if err == nil {
		err = unmet
	}
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	var need []PointValue
	for _, a := range d.c.Arm {
		v, err := d.readPoint(ctx, d.pts[a.Point])
		if err != nil {
			return fmt.Errorf("read %s of %s: %w", a.Point, d.name, err)
		}
		if v != a.Value {
			need = append(need, a)
		}
	}
	if _, err := d.writeAll(ctx, need, sfs); err != nil {
		return fmt.Errorf("arm %s: %w", d.name, err)
	}
	return nil
}

// unmet reads the settings control requires. It returns the first that
// reads another value as unmet (wrapping ErrPrecondition, with the
// profile's hint), and err when one cannot be read.
func (d *VendorDevice) unmet(ctx context.Context) (unmet, err error) {
	for _, r := range d.c.Requires {
		v, err := d.readPoint(ctx, d.pts[r.Point])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", r.Point, err)
		}
		if v != r.Equals {
			return fmt.Errorf("%s reads %g, control needs %g: %s: %w", r.Point, v, r.Equals, r.Hint, ErrPrecondition), nil
		}
	}
	return nil, nil
}

// readPoint reads and decodes one point (scale, scale factor and offset
// applied).
func (d *VendorDevice) readPoint(ctx context.Context, pt *PointSpec) (float64, error) {
	var sf *float64
	if pt.SF != "" {
		v, err := d.readScale(ctx, pt.SF)
		if err != nil {
			return 0, err
		}
		f := float64(v)
		sf = &f
	}
	regs, err := d.bus.Read(ctx, d.unit, pt.Table, pt.Address, pt.Size())
	if err != nil {
		return 0, err
	}
	p := Decode(*pt, regs, sf)
	if !p.Good() {
		return 0, fmt.Errorf("point %s reads %s", pt.Name, p.Quality)
	}
	return p.Value, nil
}

// readScale reads a sunssf point: a scale factor that is not implemented
// (0x8000) or outside SunSpec's -10..10 is an error naming it, so no value
// is encoded at a scale nobody knows.
func (d *VendorDevice) readScale(ctx context.Context, name string) (int, error) {
	pt := d.pts[name]
	regs, err := d.bus.Read(ctx, d.unit, pt.Table, pt.Address, 1)
	if err != nil {
		return 0, fmt.Errorf("read the scale factor %s: %w", name, err)
	}
	switch sf := int16(regs[0]); {
	case regs[0] == 0x8000:
		return 0, fmt.Errorf("scale factor %s reads as not implemented (0x8000): no value can be encoded", name)
	case sf < -10 || sf > 10:
		return 0, fmt.Errorf("scale factor %s reads %d, outside SunSpec's -10..10", name, sf)
	default:
		return int(sf), nil
	}
}

// readScales reads the scale factors of the points of writes that have
// one, by the sunssf point's name: a release reads only its own, so a
// rate's scale factor gone bad never stops the hand-back.
func (d *VendorDevice) readScales(ctx context.Context, writes []PointValue) (map[string]int, error) {
	sfs := map[string]int{}
	for _, w := range writes {
		n := d.pts[w.Point].SF
		if _, done := sfs[n]; n == "" || done {
			continue
		}
		v, err := d.readScale(ctx, n)
		if err != nil {
			return nil, err
		}
		sfs[n] = v
	}
	return sfs, nil
}

// writeReq is one Modbus write: FC 06 or FC 16 at addr.
type writeReq struct {
	fc   byte
	addr uint16
	regs []uint16
}

// writeAll encodes writes, merges the members of a group into one FC 16
// (members not written keep the value the device holds), sends them in
// order, and reads back every written point but those that do not read
// back (adjacent points in one read).
func (d *VendorDevice) writeAll(ctx context.Context, writes []PointValue, sfs map[string]int) (VendorStatus, error) {
	st := VendorStatus{Written: writes}
	if len(writes) == 0 {
		return st, nil
	}
	enc := map[string][]uint16{}
	for _, w := range writes {
		pt := d.pts[w.Point]
		regs, err := encode(pt, w.Value, sfs[pt.SF])
		if err != nil {
			return st, err
		}
		enc[w.Point] = regs
	}
	var reqs []writeReq
	done := map[string]bool{}
	for _, w := range writes {
		if done[w.Point] {
			continue
		}
		if g := d.groupOf(w.Point); g != nil {
			req, err := d.groupWrite(ctx, g, enc)
			if err != nil {
				return st, err
			}
			for _, n := range g {
				done[n] = true
			}
			reqs = append(reqs, req)
			continue
		}
		pt := d.pts[w.Point]
		fc := byte(0x10)
		if slices.Contains(d.c.FC06, w.Point) {
			fc = 0x06
		}
		reqs = append(reqs, writeReq{fc: fc, addr: pt.Address, regs: enc[w.Point]})
		done[w.Point] = true
	}
	for _, r := range reqs {
		if err := d.send(ctx, r); err != nil {
			return st, err
		}
	}
	var back []PointSpec
	for _, w := range writes {
		if !slices.Contains(d.c.NoReadback, w.Point) && !d.pts[w.Point].WriteOnly {
			back = append(back, *d.pts[w.Point])
		}
	}
	// Adjacent points are read back in one request; no gap is bridged.
	regsOf := make([][]uint16, len(back))
	for _, rq := range Plan(back, nil, 0) {
		regs, err := d.bus.Read(ctx, d.unit, rq.Table, rq.Addr, rq.Count)
		if err != nil {
			return st, fmt.Errorf("read back %s: %w", back[rq.Points[0]].Name, err)
		}
		for _, i := range rq.Points {
			off := back[i].Address - rq.Addr
			regsOf[i] = regs[off : off+back[i].Size()]
		}
	}
	st.Readback = map[string]float64{}
	var mismatch []string
	for i, pt := range back {
		regs := regsOf[i]
		if v, ok := RawValue(pt, regs); ok {
			st.Readback[pt.Name] = v*cmpScale(pt.Scale)*math.Pow10(sfs[pt.SF]) + pt.Offset
		}
		if !slices.Equal(regs, enc[pt.Name]) {
			mismatch = append(mismatch, fmt.Sprintf("%s wrote %v read %v", pt.Name, enc[pt.Name], regs))
		}
	}
	if len(mismatch) > 0 {
		return st, fmt.Errorf("%s: %v: %w", d.name, mismatch, ErrNotEffective)
	}
	return st, nil
}

func cmpScale(s float64) float64 {
	if s == 0 {
		return 1
	}
	return s
}

// groupOf returns the group a point is in, or nil.
func (d *VendorDevice) groupOf(name string) []string {
	for _, g := range d.c.Groups {
		if slices.Contains(g, name) {
			return g
		}
	}
	return nil
}

// groupWrite builds a group's one FC 16: the written members' values,
// and what the device holds for the others (read first).
func (d *VendorDevice) groupWrite(ctx context.Context, g []string, enc map[string][]uint16) (writeReq, error) {
	pts := make([]*PointSpec, len(g))
	for i, n := range g {
		pts[i] = d.pts[n]
	}
	sortByAddress(pts)
	start := pts[0].Address
	end := pts[len(pts)-1].Address + pts[len(pts)-1].Size()
	var held []uint16
	regs := make([]uint16, end-start)
	for _, pt := range pts {
		v, ok := enc[pt.Name]
		if !ok {
			if pt.WriteOnly {
				// The profile check makes every write carry the whole
				// set; what the device holds cannot be read.
				return writeReq{}, fmt.Errorf("group %v: write-only point %s is not written and cannot be read", g, pt.Name)
			}
			if held == nil {
				var err error
				if held, err = d.bus.Read(ctx, d.unit, Holding, start, end-start); err != nil {
					return writeReq{}, fmt.Errorf("read group %v: %w", g, err)
				}
			}
			v = held[pt.Address-start : pt.Address-start+pt.Size()]
		}
		copy(regs[pt.Address-start:], v)
	}
	return writeReq{fc: 0x10, addr: start, regs: regs}, nil
}

// send makes one write request.
func (d *VendorDevice) send(ctx context.Context, r writeReq) error {
	if r.fc == 0x10 {
		return d.bus.write(ctx, d.unit, r.addr, r.regs)
	}
	_, err := d.bus.submit(ctx, d.unit, func(c modbus.Client) ([]byte, error) {
		return c.WriteSingleRegister(r.addr, r.regs[0])
	})
	if err != nil {
		return fmt.Errorf("write unit %d holding %d (FC 06): %w", d.unit, r.addr, err)
	}
	return nil
}

// encode turns a value in a point's units into its registers: (value −
// offset) / scale / 10^sf (sf the point's scale factor as read, 0 for a
// point without one), rounded, in the point's type, word and byte order.
// A value the type cannot carry, or outside the point's min and max, is an
// error: nothing is ever written wrapped or clamped silently.
func encode(pt *PointSpec, v float64, sf int) ([]uint16, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("point %s: %g is not a value", pt.Name, v)
	}
	if (pt.Min != nil && v < *pt.Min) || (pt.Max != nil && v > *pt.Max) {
		return nil, fmt.Errorf("point %s: %g is outside its min..max", pt.Name, v)
	}
	raw := (v - pt.Offset) / cmpScale(pt.Scale) / math.Pow10(sf)
	if pt.Type != "f32" && pt.Type != "f64" {
		raw = math.Round(raw)
	}
	fits := func(lo, hi float64) error {
		if raw < lo || raw > hi {
			return fmt.Errorf("point %s: %g encodes to %g, outside %s's %g..%g", pt.Name, v, raw, pt.Type, lo, hi)
		}
		return nil
	}
	b := make([]byte, 2*pt.Size())
	var err error
	switch pt.Type {
	case "u16", "enum", "bitfield":
		if err = fits(0, math.MaxUint16); err == nil {
			binary.BigEndian.PutUint16(b, uint16(raw))
		}
	case "s16":
		if err = fits(math.MinInt16, math.MaxInt16); err == nil {
			binary.BigEndian.PutUint16(b, uint16(int16(raw)))
		}
	case "u32":
		if err = fits(0, math.MaxUint32); err == nil {
			binary.BigEndian.PutUint32(b, uint32(raw))
		}
	case "s32":
		if err = fits(math.MinInt32, math.MaxInt32); err == nil {
			binary.BigEndian.PutUint32(b, uint32(int32(raw)))
		}
	case "f32":
		if err = fits(-math.MaxFloat32, math.MaxFloat32); err == nil {
			binary.BigEndian.PutUint32(b, math.Float32bits(float32(raw)))
		}
	default:
		return nil, fmt.Errorf("point %s: a %s cannot be written by control", pt.Name, pt.Type)
	}
	if err != nil {
		return nil, err
	}
	// ordered only swaps words and bytes, so it also takes the value's
	// big-endian words to the point's word and byte order.
	regs := make([]uint16, pt.Size())
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	b = ordered(*pt, regs)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	return regs, nil
}

// ProbeProfile reads a fixed-map profile's points once from unit and, for
// a profile with a control section, the settings control requires,
// writing nothing: what `hearth config check --online` shows of a vendor
// device. It returns the points that read good, an error when the unit
// does not answer as the profile says (a read fails, or power_w or soc_pct
// does not read good), and, separately, the first requirement the device
// does not meet (wrapping ErrPrecondition, with the profile's hint).
func ProbeProfile(ctx context.Context, bus *Bus, unit uint8, p *Profile) (read map[string]float64, notReady, err error) {
	pts, err := ReadProfile(ctx, bus, unit, p, Plan(p.Points, p.Holes, p.MaxGap))
	read = map[string]float64{}
	for name, v := range pts {
		if v.Good() {
			read[name] = v.Value
		}
	}
	if err != nil {
		return read, nil, fmt.Errorf("read the %s map: %w", p.Name, err)
	}
	if p.Control != nil {
		for _, name := range []string{"power_w", "soc_pct"} {
			if _, ok := read[name]; !ok {
				return read, nil, fmt.Errorf("%s reads %s: the unit does not answer as %s", name, pts[name].Quality, p.Name)
			}
		}
		notReady, err = NewVendorDevice("probe", bus, unit, p, nil).unmet(ctx)
	}
	return read, notReady, err
}
