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
// register values.
type StorageStatus struct {
	StorCtlMod uint16  `json:"storctl_mod"`
	OutWRte    int16   `json:"out_w_rte"`
	InWRte     int16   `json:"in_w_rte"`
	RvrtTms    uint16  `json:"rvrt_tms"`
	WChaMaxW   float64 `json:"w_cha_max_w"`
}

// Storage writes approved commands to a SunSpec device's model 124
// controls: StorCtl_Mod, OutWRte and InWRte as a percentage of WChaMax at
// InOutWRte_SF, and the revert timer InOutWRte_RvrtTms, so that the device
// drops the command by itself when no refresh comes. Model 124 has no
// discharge reference of its own; WChaMax serves both ways, as on the
// devices hearth knows.
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

// Apply writes an approved command and reads it back. ModeAuto writes
// StorCtl_Mod = 0, handing the battery back to the device's own logic;
// ModePower writes the rates and the revert timer first and StorCtl_Mod
// last, so the device never runs a new mode at an old rate. A percentage is
// cut towards zero, so the device is never asked for more than was
// approved. The zero Approved, or one for another device, writes nothing.
// A read-back that differs from what was written returns ErrNotEffective
// with the status read.
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
	want := StorageStatus{RvrtTms: s.last[off124RvrtTms]}
	if a.Mode() == hearth.ModeAuto {
		if err := bus.write(ctx, unit, base+off124StorCtlMod, []uint16{0}); err != nil {
			s.forget()
			return StorageStatus{}, fmt.Errorf("hand %s back to auto: %w", s.dev.name, err)
		}
	} else {
		wmax, ok := scaled(s.last, off124WChaMax, off124WChaMaxSF, false)
		sf := int16(s.last[off124InOutWRteSF])
		if !ok || wmax <= 0 || s.last[off124InOutWRteSF] == 0x8000 {
			return StorageStatus{}, fmt.Errorf("apply to %s: WChaMax or InOutWRte_SF not implemented", s.dev.name)
		}
		pct := math.Abs(float64(a.Power())) / wmax * 100
		raw := int16(math.Trunc(min(pct, 100) / math.Pow10(int(sf))))
		want.RvrtTms = revertSeconds(s.revert)
		switch p := a.Power(); {
		case p > 0:
			want.StorCtlMod, want.OutWRte = storCtlDischarge, raw
		case p < 0:
			want.StorCtlMod, want.InWRte = storCtlCharge, raw
		default:
			want.StorCtlMod = storCtlCharge | storCtlDischarge
		}
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
	s.last = regs
	got := status(regs)
	if got.StorCtlMod != want.StorCtlMod ||
		(a.Mode() == hearth.ModePower && (got.OutWRte != want.OutWRte || got.InWRte != want.InWRte || got.RvrtTms != want.RvrtTms)) {
		return got, fmt.Errorf("%s read back %+v after writing %+v: %w", s.dev.name, got, want, ErrNotEffective)
	}
	return got, nil
}

// locate finds model 124 and reads its block once. Callers hold s.mu.
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
	for _, m := range models {
		if m.ID == 124 && m.Length >= sunspec.Lookup(124).FixedLen {
			regs, err := bus.Read(ctx, unit, Holding, m.Address, len124)
			if err != nil {
				return fmt.Errorf("read storage controls of %s: %w", s.dev.name, err)
			}
			s.addr, s.last = m.Address, regs
			return nil
		}
	}
	return fmt.Errorf("%s: %w", s.dev.name, ErrNoStorageControl)
}

// forget drops what is known about the device after a failure, so the next
// Apply finds model 124 again (the device may have been replaced).
func (s *Storage) forget() { s.addr, s.last = 0, nil }

func status(regs []uint16) StorageStatus {
	wmax, _ := scaled(regs, off124WChaMax, off124WChaMaxSF, false)
	return StorageStatus{
		StorCtlMod: regs[off124StorCtlMod],
		OutWRte:    int16(regs[off124OutWRte]),
		InWRte:     int16(regs[off124InWRte]),
		RvrtTms:    regs[off124RvrtTms],
		WChaMaxW:   wmax,
	}
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
