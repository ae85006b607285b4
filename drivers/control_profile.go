package drivers

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Control is a profile's control section: how a device takes hearth's
// battery power (positive discharging) through its own registers. Points
// are named from the profile's points; each point's type, scale, offset,
// word order and min/max say how a value is encoded, so a unit such as
// 0.01 kW is a point with scale 10 and unit W. docs/drivers.md describes
// every key.
type Control struct {
	// Requires are device settings read before the first command of a
	// lease; a value other than Equals refuses control with the Hint
	// (which names the setting the installer must change).
	Requires []Requirement `yaml:"requires"`
	// Arm are writes made once per lease, before its first command; each
	// is written only when the device does not already hold the value.
	Arm []PointValue `yaml:"arm"`
	// Setpoint maps hearth's signed watts onto the device's registers.
	Setpoint Setpoint `yaml:"setpoint"`
	// Timeout is the device's own fallback when commands stop coming.
	Timeout Timeout `yaml:"timeout"`
	// Groups are points that must go in one write-multiple (FC 16)
	// request, in the order of their addresses; they must be adjacent.
	Groups [][]string `yaml:"groups"`
	// FC06 are one-register points written with write-single (FC 06),
	// for devices that refuse FC 16 on them.
	FC06 []string `yaml:"fc06"`
	// Budget bounds writes to flash and unknown registers.
	Budget Budget `yaml:"budget"`
	// NoReadback are written points that do not read back what was
	// written; every other written point is read back and compared.
	NoReadback []string `yaml:"no_readback"`
	// Release hands the battery back to the device's own logic: at lease
	// end, in the safe state, on a clean stop and at start.
	Release Release `yaml:"release"`
}

// Requirement is a device setting that must read a value.
type Requirement struct {
	Point  string  `yaml:"point"`
	Equals float64 `yaml:"equals"`
	Hint   string  `yaml:"hint"`
}

// PointValue is one write of a value to a point, in the point's units.
type PointValue struct {
	Point string  `yaml:"point"`
	Value float64 `yaml:"value"`
}

// Setpoint units (Setpoint.Unit).
const (
	UnitW       = "W"
	UnitPercent = "pct"
	UnitAmps    = "A"
)

// Setpoint styles.
const (
	StyleSigned = "signed" // one register carries the signed power
	StyleSplit  = "split"  // a power register per direction and a mode command
)

// Setpoint maps a signed power onto registers. Style signed writes the
// power to Signed.Point (negated when Signed.Sign is charge_positive; an
// offset encoding is the point's offset). Style split writes the power's
// magnitude to the leg of its direction, then that leg's mode command;
// Zero says how 0 W is held (without it, the charge leg at 0 W).
type Setpoint struct {
	Style string `yaml:"style"`
	// Unit is what the power registers count: W (the default; a point's
	// scale carries 0.01 kW and the like), pct (percent of Reference, a
	// point in W) or A (amps at Reference, a point in V, such as the
	// battery voltage). The reference is read before every command.
	Unit      string  `yaml:"unit"`
	Reference string  `yaml:"reference"`
	Signed    *Signed `yaml:"signed"`
	Charge    *Leg    `yaml:"charge"`
	Discharge *Leg    `yaml:"discharge"`
	Zero      *Leg    `yaml:"zero"`
}

// Signed is a signed power register.
type Signed struct {
	Point string `yaml:"point"`
	// Sign is discharge_positive (hearth's) or charge_positive.
	Sign string `yaml:"sign"`
}

// Leg is one direction of a split setpoint: the point carrying the
// magnitude in watts (none for a zero leg that needs none), or Points, each
// of which carries it (SMA's minimum and maximum charge power, set equal),
// and the mode command written after it. Also are further fixed writes
// made with it (the other direction's limit set to 0, say). Sign, when
// given (discharge_positive or charge_positive), writes the signed power
// instead of its magnitude: a register that carries both directions (an
// offset encoding, Alpha ESS's 32000 ± W) in legs that differ in their
// other writes (Alpha ESS's target SoC).
type Leg struct {
	Point  string       `yaml:"point"`
	Points []string     `yaml:"points"`
	Sign   string       `yaml:"sign"`
	Mode   *PointValue  `yaml:"mode"`
	Also   []PointValue `yaml:"also"`
}

// powerPoints are the points a leg writes its power to.
func (l *Leg) powerPoints() []string {
	if l.Point != "" {
		return []string{l.Point}
	}
	return l.Points
}

// Timeout kinds.
const (
	TimeoutRegister = "register" // a timeout written with every command
	TimeoutSetting  = "setting"  // a device setting; every command re-arms it
	TimeoutNone     = "none"     // the device holds a command forever
)

// Timeout is the device's own fallback. Kind register writes Value to
// Point with every command (in the point's unit, s or min); kind setting
// is a device setting of Value that every write re-arms; kind none means
// the device holds the last command until told otherwise, and is
// commanded only with the device's allow_unguarded_control opt-in.
type Timeout struct {
	Kind      string   `yaml:"kind"`
	Point     string   `yaml:"point"`
	Value     Duration `yaml:"value"`
	RevertsTo string   `yaml:"reverts_to"`
	// LapsesWithin, when given, is the longest the device has been seen
	// to run a command after its last write, where that is later than
	// Value says (SMA's 300 s setting, seen lapsing at about 330 s). The
	// command is refreshed by Value; the control loop counts a device it
	// cannot reach at its last command for LapsesWithin.
	LapsesWithin Duration `yaml:"lapses_within"`
}

// Budget bounds writes to flash and unknown registers: a change within the
// same direction is written only when it moves the power by DeadbandW or
// more, and after a burst of BudgetBurst changes at most one every
// MinInterval. A change of direction, a command a safety rule bound (the
// ramp included) and the first after one, and a release are written at
// once; a device with a timeout gets a write a third of its timeout after
// the last one, held changes or not, and a device without one gets the
// same command again at most once every MinInterval (writeBudget).
type Budget struct {
	MinInterval Duration `yaml:"min_interval"`
	DeadbandW   float64  `yaml:"deadband_w"`
}

// Release is how the device is handed back: Writes in order, or Passive
// (no write can clear the command: it lapses by the device's timeout).
type Release struct {
	Writes  []PointValue `yaml:"writes"`
	Passive bool         `yaml:"passive"`
}

// Duration is a time span in a profile: a Go duration ("90s", "2m").
type Duration time.Duration

// UnmarshalYAML parses a Go duration string. A bad value is a
// *yaml.TypeError, as the decoder's own type errors are: decoding goes on
// and the profile's errors name its line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (say 90s or 2m)", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// D returns the span as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Storage classes of writable registers (PointSpec.Storage).
const (
	StorageRAM     = "ram"
	StorageFlash   = "flash"
	StorageUnknown = "unknown"
)

// StorageControlWindow is Profile.StorageControl for a device that reads
// model 124 as a power window.
const StorageControlWindow = "window"

// Model124 is a discovery profile's word on the model 124 registers hearth
// writes (StorCtl_Mod, OutWRte, InWRte, InOutWRte_WinTms and
// InOutWRte_RvrtTms): the storage class the device keeps them in (ram,
// flash or unknown, as a point's storage), and the write budget that paces
// them when it is not ram, as a control section's budget does.
type Model124 struct {
	Storage string `yaml:"storage"`
	Budget  Budget `yaml:"budget"`
}

// DefaultModel124 is what a discovery profile without model124 gets:
// SunSpec does not say where a device keeps model 124, so its storage is
// unknown, and the budget is the built-in profiles'.
var DefaultModel124 = Model124{Storage: StorageUnknown, Budget: Budget{MinInterval: Duration(time.Minute), DeadbandW: 100}}

// Model124Writes is how the profile's device keeps model 124: its
// model124 section, or DefaultModel124.
func (p *Profile) Model124Writes() Model124 {
	if p.Model124 == nil {
		return DefaultModel124
	}
	m := *p.Model124
	if m.Storage == "" {
		m.Storage = StorageUnknown
	}
	return m
}

// budgetLacks says what a budget for flash or unknown registers lacks:
// the key under budget and why (what names the registers), or "" when
// it will do.
func budgetLacks(b Budget, what string) (key, msg string) {
	switch {
	case b.MinInterval.D() < MinFlashInterval:
		return "min_interval", fmt.Sprintf("%s: a budget of at least %v between changes is required", what, MinFlashInterval)
	case b.DeadbandW <= 0 || math.IsNaN(b.DeadbandW):
		return "deadband_w", fmt.Sprintf("%s: a deadband above 0 W is required", what)
	}
	return "", ""
}

// MinFlashInterval is the shortest budget interval a profile may give when
// it writes flash or unknown registers.
const MinFlashInterval = time.Minute

// SignBit names a bit of a bitfield point that makes a value negative.
type SignBit struct {
	Point string `yaml:"point"`
	Bit   uint   `yaml:"bit"`
}

// Guarded reports whether the device reverts by itself when commands stop.
func (c *Control) Guarded() bool { return c.Timeout.Kind != TimeoutNone }

// storageOf is a writable point's storage class, unknown by default.
func storageOf(pt *PointSpec) string {
	if pt.Storage == "" {
		return StorageUnknown
	}
	return pt.Storage
}

// checkPointExtras checks the point keys the control section added:
// storage, sign_bit, minus and write_only.
func (p *Profile) checkPointExtras(names map[string]*PointSpec) []error {
	var errs []error
	switch {
	case p.StorageControl != "" && p.StorageControl != StorageControlWindow:
		errs = append(errs, ProfileError{File: p.File, Line: p.keyLines["storage_control"], Msg: fmt.Sprintf("storage_control %q: want window (or leave it out)", p.StorageControl)})
	case p.StorageControl != "" && p.Discovery != "sunspec":
		errs = append(errs, ProfileError{File: p.File, Line: p.keyLines["storage_control"], Msg: "storage_control is for discovery: sunspec profiles (model 124)"})
	}
	if m := p.Model124; m != nil {
		bad := func(key, msg string) {
			errs = append(errs, ProfileError{File: p.File, Line: p.lineOf(key), Msg: key + ": " + msg})
		}
		switch m.Storage {
		case "", StorageRAM, StorageFlash, StorageUnknown:
		default:
			bad("model124.storage", fmt.Sprintf("%q: want ram, flash or unknown", m.Storage))
		}
		if p.Discovery != "sunspec" {
			bad("model124", "is for discovery: sunspec profiles")
		} else if w := p.Model124Writes(); w.Storage != StorageRAM {
			if key, msg := budgetLacks(w.Budget, "model 124 is "+w.Storage+" storage"); key != "" {
				bad("model124.budget."+key, msg)
			}
		}
	}
	for i := range p.Points {
		pt := &p.Points[i]
		bad := func(format string, args ...any) {
			errs = append(errs, ProfileError{File: p.File, Line: pt.Line, Point: pt.Name, Msg: fmt.Sprintf(format, args...)})
		}
		switch pt.Storage {
		case "", StorageRAM, StorageFlash, StorageUnknown:
			if pt.Storage != "" && !pt.Writable {
				bad("storage is for writable points")
			}
		default:
			bad("storage %q: want ram, flash or unknown", pt.Storage)
		}
		if sb := pt.SignBit; sb != nil {
			ref, ok := names[sb.Point]
			switch {
			case !ok:
				bad("sign_bit point %q: no such point", sb.Point)
			case ref.Type != "bitfield":
				bad("sign_bit point %q: is a %s, not a bitfield", sb.Point, ref.Type)
			case sb.Bit > 15:
				bad("sign_bit bit %d: a register has bits 0..15", sb.Bit)
			}
			if !numericType(pt.Type) {
				bad("sign_bit is for numeric points")
			}
		}
		if pt.Minus != "" {
			ref, ok := names[pt.Minus]
			switch {
			case !numericType(pt.Type):
				bad("minus is for numeric points")
			case pt.SignBit != nil:
				bad("minus and sign_bit both give the sign: use one")
			case !ok:
				bad("minus point %q: no such point", pt.Minus)
			case ref == pt || ref.Minus != "" || ref.SignBit != nil:
				bad("minus point %q: is itself signed by another point", pt.Minus)
			case !numericType(ref.Type) || ref.WriteOnly:
				bad("minus point %q: is not a value that can be read", pt.Minus)
			}
		}
		if pt.WriteOnly && !pt.Writable {
			bad("write_only is for writable points")
		}
	}
	return errs
}

// checkControl checks the control section against the points: every point
// named exists and is writable where it is written, groups are adjacent,
// the timeout and budget fit each other, and the reading the control loop
// judges (power_w, soc_pct) is there. Errors name the file, the line and
// the key.
func (p *Profile) checkControl() error {
	c := p.Control
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, ProfileError{File: p.File, Line: p.lineOf(key), Msg: key + ": " + fmt.Sprintf(format, args...)})
	}
	names := map[string]*PointSpec{}
	for i := range p.Points {
		names[p.Points[i].Name] = &p.Points[i]
	}
	for _, want := range []string{"power_w", "soc_pct"} {
		if names[want] == nil {
			bad("control", "a controllable profile needs the point %s, which the control loop judges the device by", want)
		}
	}
	point := func(key, name string, write bool) *PointSpec {
		pt := names[name]
		switch {
		case name == "":
			bad(key, "point: required")
		case pt == nil:
			bad(key, "point %q: no such point", name)
		case write && !pt.Writable:
			bad(key, "point %q is not writable", name)
		case pt.Type == "string" || pt.Type == "sunssf":
			bad(key, "point %q is a %s: it carries no value to write", name, pt.Type)
		case !write && pt.WriteOnly:
			bad(key, "point %q is write_only: the device does not read it back", name)
		case !write && pt.Minus != "":
			bad(key, "point %q is the difference of two points: read it as one", name)
		default:
			return pt
		}
		return nil
	}
	value := func(key string, pv PointValue) {
		pt := point(key, pv.Point, true)
		switch {
		case pt == nil:
		case pt.SF != "":
			// The raw value depends on the scale factor the device
			// reports when it is written: only min and max can be checked.
			if (pt.Min != nil && pv.Value < *pt.Min) || (pt.Max != nil && pv.Value > *pt.Max) {
				bad(key, "point %s: %g is outside its min..max", pt.Name, pv.Value)
			}
		default:
			if _, err := encode(pt, pv.Value, 0); err != nil {
				bad(key, "%v", err)
			}
		}
	}
	for i, r := range c.Requires {
		point(fmt.Sprintf("control.requires.%d.point", i), r.Point, false)
		if strings.TrimSpace(r.Hint) == "" {
			bad(fmt.Sprintf("control.requires.%d.hint", i), "required: name the device setting the installer must change")
		}
	}
	for i, a := range c.Arm {
		value(fmt.Sprintf("control.arm.%d", i), a)
		if pt := names[a.Point]; pt != nil && pt.WriteOnly {
			bad(fmt.Sprintf("control.arm.%d", i), "point %q is write_only: an arm write is made only when the device does not hold the value, which cannot be read", a.Point)
		}
	}
	leg := func(key string, l *Leg, needPoint bool) {
		if l == nil {
			bad(key, "required for style split")
			return
		}
		if l.Sign != "" && l.Sign != "discharge_positive" && l.Sign != "charge_positive" {
			bad(key+".sign", "%q: want discharge_positive or charge_positive (or leave it out for the magnitude)", l.Sign)
		}
		switch {
		case l.Point != "" && len(l.Points) > 0:
			bad(key+".points", "give point or points, not both")
		case len(l.Points) > 0:
			for i, n := range l.Points {
				point(fmt.Sprintf("%s.points.%d", key, i), n, true)
			}
		case l.Point != "" || needPoint:
			point(key+".point", l.Point, true)
		}
		if l.Mode != nil {
			value(key+".mode", *l.Mode)
		}
		for i, a := range l.Also {
			value(fmt.Sprintf("%s.also.%d", key, i), a)
		}
	}
	sp := c.Setpoint
	switch sp.Style {
	case StyleSigned:
		if sp.Signed == nil {
			bad("control.setpoint.signed", "required for style signed")
			break
		}
		point("control.setpoint.signed.point", sp.Signed.Point, true)
		if sp.Signed.Sign != "discharge_positive" && sp.Signed.Sign != "charge_positive" {
			bad("control.setpoint.signed.sign", "%q: want discharge_positive or charge_positive", sp.Signed.Sign)
		}
	case StyleSplit:
		leg("control.setpoint.charge", sp.Charge, true)
		leg("control.setpoint.discharge", sp.Discharge, true)
		if sp.Zero != nil {
			leg("control.setpoint.zero", sp.Zero, false)
		}
	default:
		bad("control.setpoint.style", "%q: want signed or split", sp.Style)
	}
	switch sp.Unit {
	case "", UnitW:
		if sp.Reference != "" {
			bad("control.setpoint.reference", "a reference is for unit pct or A")
		}
	case UnitPercent, UnitAmps:
		if ref := point("control.setpoint.reference", sp.Reference, false); ref != nil && !numericType(ref.Type) {
			bad("control.setpoint.reference", "point %q is a %s: a reference is a number", sp.Reference, ref.Type)
		}
	default:
		bad("control.setpoint.unit", "%q: want W, pct or A", sp.Unit)
	}
	t := c.Timeout
	switch t.Kind {
	case TimeoutRegister:
		if pt := point("control.timeout.point", t.Point, true); pt != nil {
			if pt.Unit != "s" && pt.Unit != "min" {
				bad("control.timeout.point", "point %q: unit %q, want s or min", t.Point, pt.Unit)
			} else if pt.SF != "" {
				// RevertTimeout is what the device holds, known before it
				// is read: the control loop counts an unreachable device
				// at its last command for that long.
				bad("control.timeout.point", "point %q has sf: %s: the timeout the device holds would depend on the scale factor it reports; give the point a fixed scale", t.Point, pt.SF)
			} else if _, err := encode(pt, timeoutIn(pt, t.Value.D()), 0); err != nil {
				bad("control.timeout.value", "%v", err)
			}
		}
		fallthrough
	case TimeoutSetting:
		if t.Value.D() < 10*time.Second {
			bad("control.timeout.value", "%v: a device timeout below 10s leaves no time to refresh", t.Value.D())
		}
		if t.RevertsTo == "" {
			bad("control.timeout.reverts_to", "required: say what the device does when the timeout lapses")
		}
		if t.LapsesWithin != 0 && t.LapsesWithin < t.Value {
			bad("control.timeout.lapses_within", "%v is below the timeout's value %v: it is the longest the device runs a command, never shorter than its timeout", t.LapsesWithin.D(), t.Value.D())
		}
	case TimeoutNone:
		if t.Point != "" || t.Value != 0 || t.LapsesWithin != 0 {
			bad("control.timeout", "kind none takes no point, value or lapses_within")
		}
	default:
		bad("control.timeout.kind", "%q: want register, setting or none", t.Kind)
	}
	grouped := map[string]bool{}
	for i, g := range c.Groups {
		key := fmt.Sprintf("control.groups.%d", i)
		var pts []*PointSpec
		for _, n := range g {
			if grouped[n] {
				bad(key, "point %q is in two groups", n)
			}
			grouped[n] = true
			if pt := point(key, n, true); pt != nil {
				pts = append(pts, pt)
			}
		}
		if len(pts) != len(g) || len(g) == 0 {
			continue
		}
		sortByAddress(pts)
		size := 0
		for j, pt := range pts {
			size += int(pt.Size())
			if j > 0 && pts[j-1].Address+pts[j-1].Size() != pt.Address {
				bad(key, "points %s and %s are not adjacent: a group is one FC 16 block", pts[j-1].Name, pt.Name)
			}
		}
		if size > MaxWriteRegisters {
			bad(key, "%d registers: a write carries at most %d", size, MaxWriteRegisters)
		}
	}
	for i, n := range c.FC06 {
		key := fmt.Sprintf("control.fc06.%d", i)
		if pt := point(key, n, true); pt != nil && (pt.Size() != 1 || grouped[n]) {
			bad(key, "point %q: FC 06 writes one register, outside any group", n)
		}
	}
	for i, n := range c.NoReadback {
		point(fmt.Sprintf("control.no_readback.%d", i), n, true)
	}
	if c.Release.Passive {
		if len(c.Release.Writes) > 0 {
			bad("control.release", "passive release takes no writes")
		}
		if !c.Guarded() {
			bad("control.release.passive", "a device without a timeout cannot be released passively: it would hold the command forever")
		}
	} else if len(c.Release.Writes) == 0 {
		bad("control.release", "give the writes that hand the battery back, or passive: true")
	}
	for i, w := range c.Release.Writes {
		value(fmt.Sprintf("control.release.writes.%d", i), w)
	}
	p.checkCompleteSet(names, bad)
	// The write budget: flash and unknown registers are never written
	// every second, and the device's refresh fits the budget.
	flash := ""
	for _, n := range c.writtenPoints() {
		if pt := names[n]; pt != nil && pt.Writable && storageOf(pt) != StorageRAM && flash == "" {
			flash = n
		}
	}
	if flash != "" {
		key, msg := budgetLacks(c.Budget, fmt.Sprintf("point %s is %s storage", flash, storageOf(names[flash])))
		switch {
		case key != "":
			bad("control.budget."+key, "%s", msg)
		case c.Guarded() && t.Value.D() < 3*c.Budget.MinInterval.D():
			bad("control.timeout.value", "%v: refreshing at a third of it would write %s storage more often than the budget's %v", t.Value.D(), storageOf(names[flash]), c.Budget.MinInterval.D())
		}
	}
	return errors.Join(errs...)
}

// lineOf is the line of a dotted key, or of the nearest key above it
// that the file has (a required key left out is reported at its parent).
func (p *Profile) lineOf(key string) int {
	line := p.keyLines[key]
	for k := key; line == 0 && strings.Contains(k, "."); {
		k = k[:strings.LastIndex(k, ".")]
		line = p.keyLines[k]
	}
	return line
}

// commandWrites lists every point a command or release may write, each
// once, as writes of no particular value (for the scale factors a command
// reads first).
func (c *Control) commandWrites() []PointValue {
	var out []PointValue
	seen := map[string]bool{}
	for _, n := range c.writtenPoints() {
		if !seen[n] {
			seen[n] = true
			out = append(out, PointValue{Point: n})
		}
	}
	return out
}

// writtenPoints lists every point a command or release may write.
func (c *Control) writtenPoints() []string {
	var out []string
	add := func(pvs ...PointValue) {
		for _, pv := range pvs {
			out = append(out, pv.Point)
		}
	}
	add(c.Arm...)
	add(c.Release.Writes...)
	for _, l := range []*Leg{c.Setpoint.Charge, c.Setpoint.Discharge, c.Setpoint.Zero} {
		if l == nil {
			continue
		}
		out = append(out, l.powerPoints()...)
		if l.Mode != nil {
			add(*l.Mode)
		}
		add(l.Also...)
	}
	if c.Setpoint.Signed != nil {
		out = append(out, c.Setpoint.Signed.Point)
	}
	if c.Timeout.Kind == TimeoutRegister {
		out = append(out, c.Timeout.Point)
	}
	return out
}

// checkCompleteSet checks that the write-only points a control section
// writes are written whole by every command and by the release: the
// device cannot be read for the ones a write leaves out (SMA takes its
// battery command only as the complete set, SMA_Modbus-TI-en-15 5.4.3).
// It reports through bad.
func (p *Profile) checkCompleteSet(names map[string]*PointSpec, bad func(key, format string, args ...any)) {
	c := p.Control
	var set []string
	for _, n := range c.writtenPoints() {
		if pt := names[n]; pt != nil && pt.WriteOnly && !slices.Contains(set, n) {
			set = append(set, n)
		}
	}
	if len(set) == 0 {
		return
	}
	check := func(key string, wrote []string) {
		for _, n := range set {
			if !slices.Contains(wrote, n) {
				bad(key, "does not write %s: write-only points are written as a complete set (%s) by every command and the release", n, strings.Join(set, ", "))
				return
			}
		}
	}
	legs := []struct {
		key string
		l   *Leg
	}{{"control.setpoint.charge", c.Setpoint.Charge}, {"control.setpoint.discharge", c.Setpoint.Discharge}, {"control.setpoint.zero", c.Setpoint.Zero}}
	for _, lg := range legs {
		if lg.l == nil {
			continue
		}
		wrote := lg.l.powerPoints()
		for _, a := range lg.l.Also {
			wrote = append(wrote, a.Point)
		}
		if lg.l.Mode != nil {
			wrote = append(wrote, lg.l.Mode.Point)
		}
		if c.Timeout.Kind == TimeoutRegister {
			wrote = append(wrote, c.Timeout.Point)
		}
		check(lg.key, wrote)
	}
	if c.Setpoint.Signed != nil {
		wrote := []string{c.Setpoint.Signed.Point}
		if c.Timeout.Kind == TimeoutRegister {
			wrote = append(wrote, c.Timeout.Point)
		}
		check("control.setpoint.signed", wrote)
	}
	var rel []string
	for _, w := range c.Release.Writes {
		rel = append(rel, w.Point)
	}
	if !c.Release.Passive {
		check("control.release.writes", rel)
	}
}

// timeoutIn is a timeout in a point's unit (s or min), rounded up to the
// unit and to the point's resolution (its scale), so the device never
// gets less than the profile says.
func timeoutIn(pt *PointSpec, d time.Duration) float64 {
	v := d.Seconds()
	if pt.Unit == "min" {
		v = d.Minutes()
	}
	step := math.Max(1, math.Abs(cmpScale(pt.Scale)))
	return math.Ceil(math.Ceil(v)/step) * step
}

func sortByAddress(pts []*PointSpec) {
	for i := 1; i < len(pts); i++ {
		for j := i; j > 0 && pts[j].Address < pts[j-1].Address; j-- {
			pts[j], pts[j-1] = pts[j-1], pts[j]
		}
	}
}
