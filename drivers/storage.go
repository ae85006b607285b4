package drivers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sunspec"
	"github.com/hearth-energy/hearth/safety"
)

// Model 124 (storage) register offsets from the model's ID register, with
// the device's own names.
const (
	off124WChaMax     = 2
	off124StorCtlMod  = 5
	off124OutWRte     = 12
	off124InWRte      = 13
	off124WinTms      = 14 // InOutWRte_WinTms
	off124RvrtTms     = 15 // InOutWRte_RvrtTms
	off124WChaMaxSF   = 18 // WChaMax_SF
	off124InOutWRteSF = 25 // InOutWRte_SF
	len124            = 26 // ID, L and the 24-register fixed block

	storCtlCharge    = 1 << 0 // StorCtl_Mod CHARGE
	storCtlDischarge = 1 << 1 // StorCtl_Mod DiSCHARGE
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
// stand for, in the same terms: what the device holds. Both are 0 in mode
// auto, when the device runs its own logic (StorCtlMod 0).
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
}

// Storage writes approved commands to a SunSpec device's model 124
// controls: StorCtl_Mod, OutWRte and InWRte as a percentage of their
// references at InOutWRte_SF, and the revert timer InOutWRte_RvrtTms, so
// that the device drops the command by itself when no refresh comes.
//
// Storage finds model 124 by its own walk of the model chain, so it shares
// nothing mutable with the device's poller. Its methods are safe for
// concurrent use; writes are serialised by the device's bus.
type Storage struct {
	dev    *SunSpecDevice
	revert time.Duration

	mu   sync.Mutex
	addr uint16 // model 124 ID register; 0 until found
	last []uint16
	// The device's nameplate charge and discharge maxima besides WChaMax
	// (models 120 and 802), largest first found; 0 when it gives none.
	chaMaxW, disMaxW float64
}

// NewStorage returns the storage controls of dev. revert is the device's
// revert timer, rounded up to whole seconds (1 s..65534 s); the caller
// refreshes its command well within it.
func NewStorage(dev *SunSpecDevice, revert time.Duration) *Storage {
	return &Storage{dev: dev, revert: revert}
}

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

// Apply writes an approved command and reads it back. ModeAuto writes
// StorCtl_Mod = 0, handing the battery back to the device's own logic;
// ModePower writes the rates and the revert timer first and StorCtl_Mod
// last, so the device never runs a new mode at an old rate. A percentage is
// cut towards zero, so the device is never asked for more than was
// approved, and a power the rate register cannot carry (its int16 range,
// or 100 % of its reference) is clamped to what it carries and reported
// Saturated: a rate register never wraps. The zero Approved, or one for
// another device, writes nothing; so does an InOutWRte_SF outside
// SunSpec's -10..10. A read-back that differs from what was written,
// rates, scale factor or reference, returns ErrNotEffective with the
// status read.
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
	want := s.status(s.last)
	want.StorCtlMod, want.OutWRte, want.InWRte, want.HeldW = 0, 0, 0, 0
	sfRaw := s.last[off124InOutWRteSF]
	if a.Mode() == hearth.ModeAuto {
		if err := bus.write(ctx, unit, base+off124StorCtlMod, []uint16{0}); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("hand %s back to auto: %w", s.dev.name, err)
		}
	} else {
		if want.WChaMaxW <= 0 || sfRaw == 0x8000 {
			return StorageStatus{}, fmt.Errorf("apply to %s: WChaMax or InOutWRte_SF not implemented", s.dev.name)
		}
		if sf := int16(sfRaw); sf < -10 || sf > 10 {
			return StorageStatus{}, fmt.Errorf("apply to %s: InOutWRte_SF %d is outside SunSpec's -10..10", s.dev.name, sf)
		}
		want.RvrtTms = revertSeconds(s.revert)
		switch p := float64(a.Power()); {
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
		rates := []uint16{uint16(want.OutWRte), uint16(want.InWRte), s.last[off124WinTms], want.RvrtTms}
		if err := bus.write(ctx, unit, base+off124OutWRte, rates); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("write %s rates: %w", s.dev.name, err)
		}
		if err := bus.write(ctx, unit, base+off124StorCtlMod, []uint16{want.StorCtlMod}); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("write %s StorCtl_Mod: %w", s.dev.name, err)
		}
	}
	regs, err := bus.Read(ctx, unit, Holding, base, len124)
	if err != nil {
		s.forget()
		return StorageStatus{}, fmt.Errorf("read back %s: %w", s.dev.name, err)
	}
	prev := s.last
	s.last = regs
	got := s.status(regs)
	got.CommandedW, got.Saturated = want.CommandedW, want.Saturated
	if got.StorCtlMod != want.StorCtlMod ||
		(a.Mode() == hearth.ModePower && (got.OutWRte != want.OutWRte || got.InWRte != want.InWRte || got.RvrtTms != want.RvrtTms ||
			regs[off124InOutWRteSF] != sfRaw || regs[off124WChaMax] != prev[off124WChaMax] || regs[off124WChaMaxSF] != prev[off124WChaMaxSF])) {
		return got, fmt.Errorf("%s read back %+v after writing %+v: %w", s.dev.name, got, want, ErrNotEffective)
	}
	return got, nil
}

// locate finds model 124 and reads its block once, and the maxima of
// models 120 and 802. Callers hold s.mu.
func (s *Storage) locate(ctx context.Context) error {
	if s.addr != 0 && s.last != nil {
		return nil
	}
	bus, unit := s.dev.bus, s.dev.unit
	base, err := FindSunSpecBase(ctx, bus, unit)
	if err != nil {
		return fmt.Errorf("find storage controls of %s: %w", s.dev.name, err)
	}
	models, err := WalkModels(ctx, bus, unit, base)
	if err != nil {
		return fmt.Errorf("find storage controls of %s: %w", s.dev.name, err)
	}
	var addr uint16
	var cha, dis float64
	for _, m := range models {
		var points [2]string // charge, discharge maximum
		switch m.ID {
		case 124:
			if addr == 0 && m.Length >= sunspec.Lookup(124).FixedLen {
				addr = m.Address
			}
			continue
		case 120:
			points = [2]string{"MaxChaRte", "MaxDisChaRte"}
		case 802:
			points = [2]string{"WChaRteMax", "WDisChaRteMax"}
		default:
			continue
		}
		regs, err := bus.Read(ctx, unit, Holding, m.Address, min(m.Length+2, MaxReadRegisters))
		if err != nil {
			return fmt.Errorf("read maxima of %s (model %d): %w", s.dev.name, m.ID, err)
		}
		def := sunspec.Lookup(m.ID)
		for i, name := range points {
			pd, _ := def.Point(name)
			if v := decodeAt(def, pd, 0, regs); v.Good() && v.Value > 0 && !math.IsInf(v.Value, 0) {
				if i == 0 {
					cha = max(cha, v.Value)
				} else {
					dis = max(dis, v.Value)
				}
			}
		}
	}
	if addr == 0 {
		return fmt.Errorf("%s: %w", s.dev.name, ErrNoStorageControl)
	}
	regs, err := bus.Read(ctx, unit, Holding, addr, len124)
	if err != nil {
		return fmt.Errorf("read storage controls of %s: %w", s.dev.name, err)
	}
	s.addr, s.last, s.chaMaxW, s.disMaxW = addr, regs, cha, dis
	return nil
}

// forget drops what is known about the device after a failure, so the next
// Apply finds model 124 again (the device may have been replaced).
func (s *Storage) forget() { s.addr, s.last = 0, nil }

// status decodes a model 124 block: raw registers, references, and the
// power the rates and mode stand for.
func (s *Storage) status(regs []uint16) StorageStatus {
	wmax, ok := scaled(regs, off124WChaMax, off124WChaMaxSF, false)
	if !ok || math.IsInf(wmax, 0) {
		wmax = 0
	}
	st := StorageStatus{
		StorCtlMod: regs[off124StorCtlMod],
		OutWRte:    int16(regs[off124OutWRte]),
		InWRte:     int16(regs[off124InWRte]),
		RvrtTms:    regs[off124RvrtTms],
		WChaMaxW:   wmax,
		RateSF:     int16(regs[off124InOutWRteSF]),
	}
	st.OutRefW, st.InRefW = RateReferences(wmax, s.chaMaxW, s.disMaxW)
	st.HeldW = held(st)
	return st
}

// held is the power a model 124 state stands for, positive discharging:
// OutWRte of its reference with DISCHARGE alone, InWRte (charging) with
// CHARGE alone, their difference with both, 0 with neither (the device's
// own logic) or with a scale factor outside SunSpec's range.
func held(st StorageStatus) float64 {
	if st.RateSF < -10 || st.RateSF > 10 {
		return 0
	}
	out := sunspec.Scale(float64(st.OutWRte), st.RateSF) / 100 * st.OutRefW
	in := sunspec.Scale(float64(st.InWRte), st.RateSF) / 100 * st.InRefW
	var w float64
	switch st.StorCtlMod & (storCtlCharge | storCtlDischarge) {
	case storCtlDischarge:
		w = out
	case storCtlCharge:
		w = -in
	case storCtlCharge | storCtlDischarge:
		w = out - in
	}
	if w == 0 {
		return 0 // not -0: -0 % of a reference is no power at all
	}
	return w
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
