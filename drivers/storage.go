package drivers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sunspec"
	"github.com/hearth-energy/hearth/safety"
)

// m124 is where model 124 (storage) keeps the points Storage reads and
// writes, as offsets from the model's ID register, taken from the
// generated model table.
var m124 = layout124()

type offsets124 struct {
	WChaMax, StorCtlMod, OutWRte, InWRte, WinTms, RvrtTms, WChaMaxSF, InOutWRteSF int
	len                                                                           uint16 // ID, L and the fixed block
}

func layout124() offsets124 {
	def := sunspec.Lookup(124)
	at := func(name string) int {
		p, ok := def.Point(name)
		if !ok {
			panic("drivers: the generated model 124 has no point " + name)
		}
		return int(p.Offset)
	}
	o := offsets124{
		WChaMax: at("WChaMax"), StorCtlMod: at("StorCtl_Mod"), OutWRte: at("OutWRte"), InWRte: at("InWRte"),
		WinTms: at("InOutWRte_WinTms"), RvrtTms: at("InOutWRte_RvrtTms"),
		WChaMaxSF: at("WChaMax_SF"), InOutWRteSF: at("InOutWRte_SF"),
		len: def.FixedLen + 2,
	}
	if o.InWRte != o.OutWRte+1 || o.WinTms != o.OutWRte+2 || o.RvrtTms != o.OutWRte+3 {
		panic("drivers: model 124 OutWRte..InOutWRte_RvrtTms are not one block") // Apply writes them in one request
	}
	return o
}

// StorCtl_Mod bits.
const (
	storCtlCharge    = 1 << 0 // CHARGE
	storCtlDischarge = 1 << 1 // DiSCHARGE
)

// ErrNoStorageControl is returned when the device has no SunSpec model 124.
var ErrNoStorageControl = errors.New("device has no SunSpec storage controls (model 124)")

// ErrNotEffective is returned when the read-back after a write does not
// show what was written.
var ErrNotEffective = hearth.ErrNotEffective

// StorageStatus is what a model 124 read-back showed after a write, in raw
// register values and in watts, and what the write asked for.
//
// Powers are in hearth's sign, positive discharging. CommandedW is the
// power the written registers stand for: the approved power cut towards
// zero to the rate register's resolution, and clamped when the register
// cannot carry it (Saturated). HeldW is the power the read-back registers
// stand for, in the same terms: what the device holds. On a window device
// (Window) a command's two rates are cut to their own references, so the
// window's bounds may differ by a step (or more, saturated): both powers
// are then the bound farther from zero, the most the battery runs under
// the window (see windowPower), never 0 W for a window that forces a
// direction. Both are 0 in mode auto, when the device runs its own logic
// (StorCtlMod 0).
type StorageStatus struct {
	StorCtlMod uint16  `json:"storctl_mod"`
	OutWRte    int16   `json:"out_w_rte"`
	InWRte     int16   `json:"in_w_rte"`
	RvrtTms    uint16  `json:"rvrt_tms"`
	WChaMaxW   float64 `json:"w_cha_max_w"`
	// RateSF is InOutWRte_SF as read back: a rate register's raw value
	// is 10^RateSF percent.
	RateSF int16 `json:"rate_sf"`
	// OutRefW and InRefW are the watts 100 % OutWRte and InWRte stand for
	// (see RateReferences).
	OutRefW float64 `json:"out_ref_w"`
	InRefW  float64 `json:"in_ref_w"`

	CommandedW float64 `json:"commanded_w"`
	HeldW      float64 `json:"held_w"`
	// Saturated says the approved power could not be written: the rate
	// register's range (int16) or 100 % of the reference bound it, and
	// CommandedW is the most the register carries, towards zero.
	Saturated bool `json:"saturated,omitempty"`
	// Window says the device reads model 124 as a power window.
	Window bool `json:"window,omitempty"`
	// Deferred says the write budget held the command the device holds
	// (HeldW, as read) instead of writing CommandedW: nothing was written.
	Deferred bool `json:"deferred,omitempty"`
}

// Storage writes approved commands to a SunSpec device's model 124
// controls: StorCtl_Mod, OutWRte and InWRte as a percentage of their
// references at InOutWRte_SF, and the revert timer InOutWRte_RvrtTms, so
// that the device drops the command by itself when no refresh comes.
//
// Storage takes model 124's address from the model chain the device's
// poller walked (it walks the chain itself only when the poller has not
// yet), and reads the registers every write depends on (the model 124
// block with WChaMax and the scale factors, the maxima of models 120
// and 802, and 802's LocRemCtl) right before each write, so a scale
// factor that changed since the last write is never written at its old
// value, nor a command to a battery under local control. Its methods are safe
// for concurrent use; writes are serialised by the device's bus.
type Storage struct {
	dev    *SunSpecDevice
	revert time.Duration
	window bool // model 124 is a power window (PowerWindow)
	// budget paces the writes when the device keeps model 124 in flash or
	// unknown storage (WriteBudget); nil: every change is written.
	budget *writeBudget
	// last is the command last written, as the block read before the
	// next one must show it for the budget to hold that one.
	last written124

	mu     sync.Mutex
	addr   uint16    // model 124 ID register; 0 until found
	maxima []maximum // the charge and discharge maxima the device has besides WChaMax
	locRem uint16    // model 802 LocRemCtl; 0: the device has none
}

// maximum is one charge or discharge maximum of model 120 or 802: where
// its value and its scale factor are.
type maximum struct {
	addr, sfAddr uint16
	discharge    bool
}

// maximumPoints are the points of models 120 and 802 that give a maximum
// for a direction, with their scale factors from the generated table.
var maximumPoints = []struct {
	model     uint16
	point     string
	discharge bool
}{
	{model: 120, point: "MaxChaRte"},
	{model: 120, point: "MaxDisChaRte", discharge: true},
	{model: 802, point: "WChaRteMax"},
	{model: 802, point: "WDisChaRteMax", discharge: true},
}

// NewStorage returns the storage controls of dev. revert is the device's
// revert timer, rounded up to whole seconds (1 s..65534 s); the caller
// refreshes its command well within it.
func NewStorage(dev *SunSpecDevice, revert time.Duration, opts ...StorageOption) *Storage {
	s := &Storage{dev: dev, revert: revert}
	for _, o := range opts {
		o(s)
	}
	return s
}

// StorageOption configures a Storage.
type StorageOption func(*Storage)

// WriteBudget paces the model 124 writes of a device that keeps them as
// m says, with the engine a control section's budget uses (kept by now;
// nil: time.Now): for flash or unknown storage a change in the same
// direction is written only past the deadband and, after a burst, at most
// once per interval, while a change of direction, a command a safety rule
// bound and the first after one, a release, and a write a third of the
// revert timer after the last are written at once. RAM storage writes
// every change.
func WriteBudget(m Model124, now func() time.Time) StorageOption {
	return func(s *Storage) {
		if m.Storage != StorageRAM {
			s.budget = newWriteBudget(m.Budget, s.RevertTimeout(), now)
		}
	}
}

// PowerWindow drives a device that reads model 124 as a power window
// (Fronius GEN24, profile storage_control: window): the battery runs its
// own logic within [−InWRte, OutWRte] of the references, so a command of P
// W is the window [P, P]: StorCtl_Mod both bits, OutWRte P and InWRte −P
// (a forced charge is a negative OutWRte), and 0 W is [0, 0]. With
// references that differ the two bounds are cut to different resolutions;
// the status reports the one farther from zero (windowPower).
func PowerWindow() StorageOption { return func(s *Storage) { s.window = true } }

// Name returns the device's name.
func (s *Storage) Name() string { return s.dev.name }

// RevertTimeout returns the revert timer the device is given.
func (s *Storage) RevertTimeout() time.Duration {
	return time.Duration(revertSeconds(s.revert)) * time.Second
}

func revertSeconds(d time.Duration) uint16 {
	sec := math.Ceil(d.Seconds())
	return uint16(max(1, min(sec, 65534)))
}

// RateReferences returns the watts that 100 % of OutWRte (discharge) and
// of InWRte (charge) stand for, given WChaMax and the device's other
// maxima for each direction (model 120 MaxDisChaRte and MaxChaRte, model
// 802 WDisChaRteMax and WChaRteMax; 0 when absent).
//
// Model 124 scales InWRte by WChaMax and OutWRte by "WDisChaMax", a point
// the model does not have, and devices differ in what they take for it.
// The reference is the largest maximum the device gives for the direction,
// WChaMax included: were the device's own reference smaller, a percentage
// of the larger one asks it for less than approved, never more.
func RateReferences(wChaMax, chaMax, disMax float64) (out, in float64) {
	return max(wChaMax, disMax), max(wChaMax, chaMax)
}

// rate is one rate register's value for a power, at scale factor sf
// against ref: the percentage cut towards zero to the register's
// resolution, and clamped to the most the register carries (its int16
// range, and 100 %). saturated says the clamp bound it.
func rate(w, ref float64, sf int16) (raw int16, saturated bool) {
	exact := math.Abs(w) / ref * 100 / math.Pow10(int(sf))
	limit := maxRate(sf)
	if exact > limit {
		return int16(limit), true
	}
	return int16(math.Trunc(exact)), false
}

// maxRate is the largest raw rate at scale factor sf: 100 %, or the
// int16 range when 100 % does not fit it.
func maxRate(sf int16) float64 {
	if sf >= 0 {
		return math.Floor(100 / math.Pow10(int(sf)))
	}
	return min(100*math.Pow10(int(-sf)), math.MaxInt16)
}

// windowRates encodes a command of p W for a window device as the window
// [p, p]: OutWRte p and InWRte −p, each a rate of its own reference, so a
// forced charge is a negative OutWRte and a positive InWRte. saturated
// says either rate was clamped.
func windowRates(p, outRef, inRef float64, sf int16) (out, in int16, saturated bool) {
	out, satOut := rate(p, outRef, sf)
	in, satIn := rate(p, inRef, sf)
	if p < 0 {
		out = -out
	} else {
		in = -in
	}
	return out, in, satOut || satIn
}

// Apply writes an approved command and reads it back. It first reads the
// model 124 block and the maxima again, and encodes the rates with the
// scale factors and references just read. ModeAuto writes StorCtl_Mod = 0,
// handing the battery back to the device's own logic; ModePower writes the
// rates and the revert timer first and StorCtl_Mod last, so the device
// never runs a new mode at an old rate. A percentage is cut towards zero,
// so the device is never asked for more than was approved, and a power the
// rate register cannot carry (its int16 range, or 100 % of its reference)
// is clamped to what it carries and reported Saturated: a rate register
// never wraps. The zero Approved, or one for another device, writes
// nothing; so does a command in ModePower when InOutWRte_SF or WChaMax_SF
// reads as the not-implemented sentinel or outside SunSpec's -10..10, or
// WChaMax as not implemented or 0: the error names the register; and
// so does a command in ModePower to a battery whose model 802 LocRemCtl,
// read with the block, says LOCAL: it would not follow, and would take
// the command up unasked once switched to remote, so Apply returns
// ErrPrecondition with LocalControlHint (a release is still written). A
// read-back that differs from what was written, rates, scale factor or
// reference, returns ErrNotEffective with the status read.
func (s *Storage) Apply(ctx context.Context, a safety.Approved) (StorageStatus, error) {
	if !a.Valid() || a.Device() != s.dev.name {
		return StorageStatus{}, fmt.Errorf("apply to %s: command %v is not approved for this device", s.dev.name, a)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.locate(ctx); err != nil {
		return StorageStatus{}, err
	}
	bus, unit, base := s.dev.bus, s.dev.unit, s.addr
	regs, chaMaxW, disMaxW, local, err := s.readControls(ctx)
	if err != nil {
		s.forget()
		return StorageStatus{}, err
	}
	if local != nil && a.Mode() == hearth.ModePower {
		// Written now, the command would wait in model 124 and take over
		// the moment someone switches the battery to remote, unasked:
		// nothing is written, and the next command is written whatever
		// the budget. A release is still written: it clears a command
		// left from before the switch to local.
		s.written(nil, 0, "")
		return StorageStatus{}, fmt.Errorf("command %s: %w; nothing written", s.dev.name, local)
	}
	want := s.status(regs, chaMaxW, disMaxW)
	want.StorCtlMod, want.OutWRte, want.InWRte, want.HeldW = 0, 0, 0, 0
	sfRaw := regs[m124.InOutWRteSF]
	if a.Mode() == hearth.ModeAuto {
		s.written(nil, 0, "")
		if err := bus.write(ctx, unit, base+uint16(m124.StorCtlMod), []uint16{0}); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("hand %s back to auto: %w", s.dev.name, err)
		}
	} else {
		if err := writableScale(regs); err != nil {
			return StorageStatus{}, fmt.Errorf("apply to %s: %w; nothing written", s.dev.name, err)
		}
		want.RvrtTms = revertSeconds(s.revert)
		switch p := float64(a.Power()); {
		case s.window:
			want.StorCtlMod = storCtlCharge | storCtlDischarge
			want.OutWRte, want.InWRte, want.Saturated = windowRates(p, want.OutRefW, want.InRefW, want.RateSF)
		case p > 0:
			want.StorCtlMod = storCtlDischarge
			want.OutWRte, want.Saturated = rate(p, want.OutRefW, want.RateSF)
		case p < 0:
			want.StorCtlMod = storCtlCharge
			want.InWRte, want.Saturated = rate(p, want.InRefW, want.RateSF)
		default:
			want.StorCtlMod = storCtlCharge | storCtlDischarge
		}
		want.CommandedW = held(want)
		// The budget weighs the approved power: on a window device whose
		// references differ, the rates of one command are cut to two
		// resolutions, and the power they stand for moves by a step
		// with the reference the cut falls on.
		if cur := s.status(regs, chaMaxW, disMaxW); s.holds(cur) && s.budget.hold(float64(a.Power()), a.Rule(), true) {
			cur.CommandedW, cur.Saturated, cur.Deferred = want.CommandedW, want.Saturated, true
			return cur, nil
		}
		rates := []uint16{uint16(want.OutWRte), uint16(want.InWRte), regs[m124.WinTms], want.RvrtTms}
		if err := bus.write(ctx, unit, base+uint16(m124.OutWRte), rates); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("write %s rates: %w", s.dev.name, err)
		}
		if err := bus.write(ctx, unit, base+uint16(m124.StorCtlMod), []uint16{want.StorCtlMod}); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("write %s StorCtl_Mod: %w", s.dev.name, err)
		}
		s.written(&want, float64(a.Power()), a.Rule())
	}
	back, err := bus.Read(ctx, unit, Holding, base, m124.len)
	if err != nil {
		s.forget()
		return StorageStatus{}, fmt.Errorf("read back %s: %w", s.dev.name, err)
	}
	got := s.status(back, chaMaxW, disMaxW)
	got.CommandedW, got.Saturated = want.CommandedW, want.Saturated
	if got.StorCtlMod != want.StorCtlMod ||
		(a.Mode() == hearth.ModePower && (got.OutWRte != want.OutWRte || got.InWRte != want.InWRte || got.RvrtTms != want.RvrtTms ||
			back[m124.InOutWRteSF] != sfRaw || back[m124.WChaMax] != regs[m124.WChaMax] || back[m124.WChaMaxSF] != regs[m124.WChaMaxSF])) {
		return got, fmt.Errorf("%s read back %+v after writing %+v: %w", s.dev.name, got, want, ErrNotEffective)
	}
	return got, nil
}

// writableScale says why a model 124 block cannot carry a rate: a scale
// factor the rates depend on that is the sentinel or outside SunSpec's
// range, or no WChaMax.
func writableScale(regs []uint16) error {
	for _, sf := range []struct {
		name string
		raw  uint16
	}{{"InOutWRte_SF", regs[m124.InOutWRteSF]}, {"WChaMax_SF", regs[m124.WChaMaxSF]}} {
		if sf.raw == 0x8000 {
			return fmt.Errorf("%s reads as not implemented (0x8000): no rate can be encoded", sf.name)
		}
		if v := int16(sf.raw); v < -10 || v > 10 {
			return fmt.Errorf("%s %d is outside SunSpec's -10..10", sf.name, v)
		}
	}
	if w, ok := scaled(regs, m124.WChaMax, m124.WChaMaxSF, false); !ok || w <= 0 {
		return errors.New("WChaMax is not implemented or 0: rates have no reference")
	}
	return nil
}

// locate finds model 124 and the maxima of models 120 and 802 in the
// device's model chain; callers hold s.mu.
func (s *Storage) locate(ctx context.Context) error {
	if s.addr != 0 {
		return nil
	}
	models := s.dev.Models()
	if len(models) == 0 {
		// The poller has not discovered the device yet: walk the chain
		// here, without keeping it (the poller owns the device's).
		base, err := FindSunSpecBase(ctx, s.dev.bus, s.dev.unit)
		if err != nil {
			return fmt.Errorf("find storage controls of %s: %w", s.dev.name, err)
		}
		if models, err = WalkModels(ctx, s.dev.bus, s.dev.unit, base); err != nil {
			return fmt.Errorf("find storage controls of %s: %w", s.dev.name, err)
		}
	}
	var addr uint16
	var maxima []maximum
	for _, m := range models {
		if m.ID == 124 && addr == 0 && m.Length+2 >= m124.len {
			addr = m.Address
		}
	}
	for _, mp := range maximumPoints {
		for _, m := range models {
			if m.ID != mp.model {
				continue
			}
			def := sunspec.Lookup(m.ID)
			p, _ := def.Point(mp.point)
			sf, _ := def.Point(p.SF)
			if int(max(p.Offset, sf.Offset)) < int(m.Length)+2 {
				maxima = append(maxima, maximum{addr: m.Address + p.Offset, sfAddr: m.Address + sf.Offset, discharge: mp.discharge})
			}
			break
		}
	}
	var locRem uint16
	if i := slices.IndexFunc(models, func(m ModelInstance) bool { return m.ID == 802 }); i >= 0 {
		if p, _ := sunspec.Lookup(802).Point("LocRemCtl"); p.Offset < models[i].Length+2 {
			locRem = models[i].Address + p.Offset
		}
	}
	if addr == 0 {
		return fmt.Errorf("%s: %w", s.dev.name, ErrNoStorageControl)
	}
	s.addr, s.maxima, s.locRem = addr, maxima, locRem
	return nil
}

// readControls reads, in the fewest requests, the model 124 block, the
// maxima with their scale factors and model 802's LocRemCtl, and returns
// the block, the largest charge and discharge maxima (0 when the device
// gives none) and, when the battery reads under local control, the
// refusal (LocalControlError). Callers hold s.mu.
func (s *Storage) readControls(ctx context.Context) (block []uint16, chaMaxW, disMaxW float64, local, err error) {
	specs := []PointSpec{{Name: "model 124", Address: s.addr, Table: Holding, Type: "string", Length: m124.len}}
	if s.locRem != 0 {
		specs = append(specs, PointSpec{Name: "LocRemCtl", Address: s.locRem, Table: Holding, Type: "u16"})
	}
	for _, m := range s.maxima {
		specs = append(specs,
			PointSpec{Name: "maximum", Address: m.addr, Table: Holding, Type: "u16"},
			PointSpec{Name: "maximum scale factor", Address: m.sfAddr, Table: Holding, Type: "sunssf"})
	}
	val := map[uint16]uint16{}
	for _, rq := range Plan(specs, nil, MaxReadRegisters) {
		regs, err := s.dev.bus.Read(ctx, s.dev.unit, Holding, rq.Addr, rq.Count)
		if err != nil {
			return nil, 0, 0, nil, fmt.Errorf("read storage controls of %s: %w", s.dev.name, err)
		}
		for i, r := range regs {
			val[rq.Addr+uint16(i)] = r
		}
		if rq.Addr <= s.addr && int(rq.Addr)+int(rq.Count) >= int(s.addr)+int(m124.len) {
			block = regs[s.addr-rq.Addr : s.addr-rq.Addr+m124.len]
		}
	}
	for _, m := range s.maxima {
		raw, sf := val[m.addr], val[m.sfAddr]
		if raw == 0xFFFF || sf == 0x8000 || int16(sf) < -10 || int16(sf) > 10 {
			continue
		}
		if m.discharge {
			disMaxW = max(disMaxW, sunspec.Scale(float64(raw), int16(sf)))
		} else {
			chaMaxW = max(chaMaxW, sunspec.Scale(float64(raw), int16(sf)))
		}
	}
	if s.locRem != 0 {
		local = LocalControlError(val[s.locRem])
	}
	return block, chaMaxW, disMaxW, local, nil
}

// forget drops what is known about the device after a failure, so the next
// Apply finds model 124 again (the device may have been replaced), and the
// next command is written whatever the budget.
func (s *Storage) forget() {
	s.addr, s.maxima = 0, nil
	s.written(nil, 0, "")
}

// written124 is what a model 124 command wrote and the scale it was
// written at: StorCtl_Mod, the rates, the revert timer, InOutWRte_SF and
// the references.
type written124 struct {
	mod, out, in, rvrt uint16
	sf                 int16
	outRef, inRef      float64
}

func writtenOf(st StorageStatus) written124 {
	return written124{st.StorCtlMod, uint16(st.OutWRte), uint16(st.InWRte), st.RvrtTms, st.RateSF, st.OutRefW, st.InRefW}
}

// written records the command a write made (st, for approved power w
// bound by rule) for the budget; nil: the next command is written
// whatever the budget (a release, or a write that failed). Callers hold
// s.mu.
func (s *Storage) written(st *StorageStatus, w float64, rule hearth.Rule) {
	if s.budget == nil {
		return
	}
	if st == nil {
		s.budget.forget()
		return
	}
	s.last = writtenOf(*st)
	s.budget.written(w, rule)
}

// holds reports whether the block just read (cur) shows the command last
// written, at the scale factor and references it was written at: only then may the budget hold
// the next one (a device that reverted, was written by someone else, or
// changed a scale factor or reference gets the command at once). False
// without a budget.
func (s *Storage) holds(cur StorageStatus) bool {
	return s.budget != nil && s.budget.wrote && s.last == writtenOf(cur)
}

// status decodes a model 124 block: raw registers, references (with the
// maxima read with it), and the power the rates and mode stand for.
func (s *Storage) status(regs []uint16, chaMaxW, disMaxW float64) StorageStatus {
	wmax, ok := scaled(regs, m124.WChaMax, m124.WChaMaxSF, false)
	if !ok || math.IsInf(wmax, 0) {
		wmax = 0
	}
	st := StorageStatus{
		StorCtlMod: regs[m124.StorCtlMod],
		OutWRte:    int16(regs[m124.OutWRte]),
		InWRte:     int16(regs[m124.InWRte]),
		RvrtTms:    regs[m124.RvrtTms],
		WChaMaxW:   wmax,
		RateSF:     int16(regs[m124.InOutWRteSF]),
		Window:     s.window,
	}
	st.OutRefW, st.InRefW = RateReferences(wmax, chaMaxW, disMaxW)
	st.HeldW = held(st)
	return st
}

// held is the power a model 124 state stands for, positive discharging:
// OutWRte of its reference with DISCHARGE alone, InWRte (charging) with
// CHARGE alone, their difference with both, 0 with neither (the device's
// own logic) or with a scale factor outside SunSpec's range. On a power
// window device it is the power the window [−InWRte, OutWRte] forces
// (windowPower) with both bits, else 0.
func held(st StorageStatus) float64 {
	if st.RateSF < -10 || st.RateSF > 10 {
		return 0
	}
	out := sunspec.Scale(float64(st.OutWRte), st.RateSF) / 100 * st.OutRefW
	in := sunspec.Scale(float64(st.InWRte), st.RateSF) / 100 * st.InRefW
	var w float64
	mod := st.StorCtlMod & (storCtlCharge | storCtlDischarge)
	switch {
	case st.Window && mod == storCtlCharge|storCtlDischarge:
		w = windowPower(-in, out, math.Pow10(int(st.RateSF))/100*max(st.OutRefW, st.InRefW))
	case st.Window:
		// One bound alone forces nothing: the device's own logic.
	case mod == storCtlDischarge:
		w = out
	case mod == storCtlCharge:
		w = -in
	case mod == storCtlCharge|storCtlDischarge:
		w = out - in
	}
	if w == 0 {
		return 0 // not -0: -0 % of a reference is no power at all
	}
	return w
}

// windowPower is the power a window device runs for the window [lo, hi]
// (lo from InWRte, hi from OutWRte), positive discharging: the battery
// runs its own logic held within the bounds.
//
// A command of P W is the window [P, P], but its two rates are each cut
// towards zero to their own reference's resolution, so with references
// that differ the bounds come out up to a step apart (step: one raw rate
// of the larger reference), both between 0 and P: 1500 W against 6 kW and
// 7 kW at InOutWRte_SF -2 is [1500, 1499.4]. Such a window, and one that
// crosses (lo > hi: which bound wins is the device's), stands for one
// power, and a window wider than a step that keeps the battery off zero
// (a command that saturated one rate: 6500 W against the same references
// is [6000, 6499.5]) forces that direction too. Of the bounds, the one
// farther from zero is taken: the battery runs it whenever its own logic
// would go further, and never more, so it is the most the battery runs:
// within a step of what it runs when no rate saturated, and never more
// than the approved power, which both bounds are cut from. Counting the
// most keeps a site cap from handing out power this battery may be using
// (counted at 1499.4 W, a battery running 1500 W would leave 1500.6 W of
// a 3000 W cap to the others). A window that reaches both sides of zero,
// or a wider one with zero as a bound, forces nothing: 0 W, the device's
// own logic.
func windowPower(lo, hi, step float64) float64 {
	switch {
	case lo < 0 && hi > 0 || lo > 0 && hi < 0:
		return 0
	case (lo == 0 || hi == 0) && hi-lo > step*(1+1e-9): // past float noise in the decoded bounds
		return 0
	case math.Abs(lo) > math.Abs(hi):
		return lo
	}
	return hi
}

// scaled decodes a uint16 or int16 register with its scale factor.
func scaled(regs []uint16, off, sfOff int, signed bool) (float64, bool) {
	raw, sf := regs[off], regs[sfOff]
	if sf == 0x8000 || (!signed && raw == 0xFFFF) || (signed && raw == 0x8000) {
		return 0, false
	}
	v := float64(raw)
	if signed {
		v = float64(int16(raw))
	}
	return sunspec.Scale(v, int16(sf)), true
}
