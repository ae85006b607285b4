// Package sim simulates a home battery behind a hybrid inverter that speaks
// SunSpec over Modbus: models 1 (common), 103 (three-phase inverter), 124
// (storage controls) and 802 (battery), laid out from the tables in package
// sunspec, and on request 803 (lithium-ion bank: module temperatures, one
// string) and 203 (a three-phase meter at the grid connection), after 802. It is the device the drivers, safety and agent tests talk to, and
// the device behind cmd/hearthsim.
//
// Physics (PV, house load, battery energy, cell voltage, temperature) is
// advanced lazily: every request, State call and setter first integrates
// from the previous step to the injected clock's now, so a test controls
// time completely by moving its clock.
//
// Power sign convention, as everywhere in hearth: battery power is positive
// when discharging and negative when charging; inverter AC power is positive
// when exporting. Model 802 W and A use the same convention.
//
// Model 124 control semantics implemented here:
//
//   - StorCtl_Mod bit 0 (CHARGE) only: the battery charges at InWRte percent
//     of WChaMax (a negative InWRte discharges instead).
//   - StorCtl_Mod bit 1 (DISCHARGE) only: the battery discharges at OutWRte
//     percent of WChaMax (the model has no WDisChaMax, so WChaMax is the
//     reference both ways), or with Config.DischargeReference percent of
//     model 802 WDisChaRteMax.
//   - Both bits: net power (OutWRte − InWRte) percent of their references.
//   - Neither bit: default self-consumption: the battery covers house load
//     minus PV.
//   - In every mode charging is limited to WChaMax and the configured
//     MaxChargeW, discharging to MaxDischargeW; at 0 % SoC the battery will
//     not discharge and at 100 % it will not charge. With ChaGriSet = PV (0)
//     charging is further limited to the PV production.
//   - InOutWRte_RvrtTms: when non-zero, the command reverts that many seconds
//     after the last write to any model 124 register (each such write
//     restarts the timer). Reverting sets StorCtl_Mod to 0, so the device
//     falls back to self-consumption and the read-back shows it; OutWRte,
//     InWRte and RvrtTms keep their values. State().Reverted stays true until
//     the next model 124 write.
//   - WChaGra, WDisChaGra, InOutWRte_WinTms and InOutWRte_RmpTms are stored
//     and read back but not modelled: power steps at once.
//
// Writes are accepted only to the writable points the simulator implements
// (model 1 DA; model 124 WChaMax, WChaGra, WDisChaGra, StorCtl_Mod,
// OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms, InOutWRte_RmpTms,
// ChaGriSet; model 802 SocRsvMax, SoCRsvMin, CtrlHb, AlmRst, SetOp,
// SetInvState). A write touching any other mapped register is refused with
// exception 0x02 and a value outside a point's range with 0x03; a refused
// request changes nothing. Model 802 SetOp = DISCONNECT (2) holds the
// battery at 0 W until CONNECT (1).
//
// SetLocalControl puts the battery under local control, as a switch on the
// inverter does: model 802 LocRemCtl reads LOCAL and the battery runs its
// own self-consumption within its hardware limits, whatever model 124 holds.
// Model 124 writes are still accepted, stored and read back (and still start
// the revert timer); they act again once control is remote.
package sim

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultUnitID        = 1
	DefaultBase          = 40000
	DefaultSerial        = "SIM0001"
	DefaultCapacityWh    = 10000
	DefaultMaxChargeW    = 5000
	DefaultMaxDischargeW = 5000
	DefaultPVPeakW       = 5000
	DefaultInitialSoC    = 50
	DefaultEfficiency    = 0.95
	DefaultBaseLoadW     = 300
	DefaultAmbientC      = 25
)

// maxWriteLog bounds the write log; the oldest entries go first.
const maxWriteLog = 10000

// Config configures a Simulator. Zero fields take the defaults above.
type Config struct {
	UnitID        uint8  // Modbus unit id answered; other ids get no response
	Base          uint16 // address of the SunS marker; 0 means 40000 (see ZeroBase)
	ZeroBase      bool   // serve the map at address 0; Base is then ignored
	Serial        string // model 1 SN
	CapacityWh    float64
	MaxChargeW    float64 // hardware charge limit, positive
	MaxDischargeW float64 // hardware discharge limit, positive
	PVPeakW       float64 // PV output at solar noon
	InitialSoC    float64 // percent; 0 means 50 (use SetSoC(0) for an empty battery)
	Efficiency    float64 // one-way efficiency, applied to charge and to discharge
	BaseLoadW     float64 // house load outside the morning and evening peaks
	AmbientC      float64 // temperature the enclosure settles to at rest
	Seed          uint64  // seeds the grid frequency and voltage noise
	// CellTemps serves model 803 (lithium-ion bank) after model 802:
	// module temperatures, following the enclosure unless SetCellTemp
	// pins them.
	CellTemps bool
	// Meter serves model 203 (three-phase meter) at the end of the chain:
	// the grid connection, inverter AC minus house load. Its W is
	// positive importing, as on a utility meter, or positive exporting
	// with MeterExportPositive.
	Meter               bool
	MeterExportPositive bool
	// InvertPowerSign makes the battery report its power and current with
	// the wrong sign (charging positive) in model 802: W and A agree with
	// each other, and no charge status (ChaSt not implemented in models
	// 124 and 802) contradicts them. A register map read with the wrong
	// sign looks so. Model 803's string currents (CellTemps) keep the
	// true sign.
	InvertPowerSign bool
	// PowerWindow makes model 124 a power window, as Fronius GEN24 reads
	// it: the battery runs its own self-consumption within [−InWRte,
	// OutWRte] (per the bits of StorCtl_Mod), so CHARGE with InWRte only
	// caps charging, and a forced charge is DISCHARGE with a negative
	// OutWRte. InOutWRte_RvrtTms starts at 0 (no revert), as on the device.
	PowerWindow bool
	// DischargeReference makes OutWRte a percentage of the maximum
	// discharge rate, model 802 WDisChaRteMax (MaxDischargeW), as model
	// 124 defines it ("% WDisChaMax", a point the model does not have),
	// while InWRte stays a percentage of WChaMax: a device whose two
	// directions have different references. Without it WChaMax is the
	// reference both ways.
	DischargeReference bool
	// Now is the simulation clock; nil means time.Now. PV and load curves
	// use the hour of day in the location of the times it returns.
	Now    func() time.Time
	Logger *slog.Logger // nil discards
}

func (c Config) withDefaults() Config {
	if c.UnitID == 0 {
		c.UnitID = DefaultUnitID
	}
	if c.ZeroBase {
		c.Base = 0
	} else if c.Base == 0 {
		c.Base = DefaultBase
	}
	if c.Serial == "" {
		c.Serial = DefaultSerial
	}
	def := func(v *float64, d float64) {
		if *v <= 0 || math.IsNaN(*v) || math.IsInf(*v, 0) {
			*v = d
		}
	}
	def(&c.CapacityWh, DefaultCapacityWh)
	def(&c.MaxChargeW, DefaultMaxChargeW)
	def(&c.MaxDischargeW, DefaultMaxDischargeW)
	def(&c.PVPeakW, DefaultPVPeakW)
	def(&c.InitialSoC, DefaultInitialSoC)
	def(&c.BaseLoadW, DefaultBaseLoadW)
	def(&c.AmbientC, DefaultAmbientC)
	if c.Efficiency <= 0 || c.Efficiency > 1 {
		c.Efficiency = DefaultEfficiency
	}
	c.InitialSoC = min(c.InitialSoC, 100)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Mode is what the simulated inverter is doing with the battery, as
// selected by model 124 StorCtl_Mod.
type Mode string

// Modes.
const (
	ModeSelfConsumption Mode = "self_consumption" // StorCtl_Mod = 0, or reverted
	ModeCharge          Mode = "charge"           // CHARGE bit only
	ModeDischarge       Mode = "discharge"        // DISCHARGE bit only
	ModeNet             Mode = "net"              // both bits
)

// State is a snapshot of the simulation at Time.
type State struct {
	Time         time.Time
	SoCPct       float64
	EnergyWh     float64
	BatteryW     hearth.Watts // positive discharging
	PVW          hearth.Watts
	LoadW        hearth.Watts
	InverterW    hearth.Watts // AC: PV + battery, positive exporting
	GridW        hearth.Watts // at the site meter: inverter − load, positive exporting
	TempC        float64      // enclosure temperature (model 103 TmpCab)
	CellVMin     float64
	CellVMax     float64
	BatteryV     float64
	Hz           float64
	Mode         Mode
	CommandW     hearth.Watts // power the current mode asks for before limits; 0 in self-consumption
	Reverted     bool         // the revert timer dropped a command and no model 124 write came since
	Connected    bool         // false after model 802 SetOp = DISCONNECT
	Local        bool         // under local control (SetLocalControl): model 124 commands do not act
	ExportedWh   float64      // lifetime AC energy exported (model 103 WH)
	DischargedWh float64      // lifetime battery energy discharged (drives model 802 NCyc)
	// FlashWrites counts accepted write requests that touched model 124:
	// registers a device may keep in flash (SunSpec does not say where;
	// Fronius GEN24 keeps InOutWRte_RvrtTms across restarts).
	FlashWrites int
}

// Write is one write request addressed to the simulator's unit, as
// received. Exception is 0 when the write was applied, else the exception
// code it was refused with.
type Write struct {
	Time      time.Time // simulation clock
	Unit      uint8
	Func      byte // 0x06 or 0x10
	Addr      uint16
	Values    []uint16
	Exception byte
}

// Fault is misbehaviour applied to subsequent requests for the simulator's
// unit. Latency delays the request, then at most one of, in this order:
// Drop closes the connection without answering; NoResponse reads the
// request and never answers (the connection stays usable); Exception
// answers with that exception code; Corrupt answers with a damaged frame
// (on TCP, a transaction id that matches no request). Dropped, unanswered
// and excepted requests are not executed; corrupted ones are.
type Fault struct {
	Latency    time.Duration
	NoResponse bool
	Exception  byte
	Drop       bool
	Corrupt    bool
	// Requests limits the fault to that many requests, after which it
	// clears itself; 0 applies it until the next SetFault.
	Requests int
}

// Simulator is a simulated battery and inverter. Its methods are safe for
// concurrent use.
type Simulator struct {
	cfg Config
	log *slog.Logger
	lay layout
	// Scale factors that depend on the configuration, fixed at New.
	powSF, whSF, gridSF int16

	mu       sync.Mutex
	regs     []uint16 // the whole map, base .. lay.last
	rng      *rand.Rand
	start    time.Time
	last     time.Time // physics integrated up to here
	energyWh float64
	dischWh  float64
	exportWh float64
	pv, load float64 // at last
	batt     float64 // at last, positive discharging
	temp     float64
	hz       float64
	vph      [3]float64
	// Pinned values from the setters; NaN when not pinned.
	pinPV, pinLoad, pinTemp, pinCellMin, pinCellMax float64
	pinTempMin, pinTempMax                          float64   // module temperatures (model 803)
	gridImpWh, gridExpWh                            float64   // lifetime energy at the grid connection (model 203)
	lastCtl                                         time.Time // last write to model 124
	reverted                                        bool
	local                                           bool // SetLocalControl
	writes                                          []Write
	fault                                           Fault
	// raw holds register values served in place of the true ones
	// (SetRaw): what the device reports, not what it does.
	raw map[uint16]uint16
	// flash counts accepted writes to model 124 (State.FlashWrites).
	flash int
	// refused are register ranges (inclusive) answered with exception 2
	// (Refuse); reads logs the read requests (Reads).
	refused [][2]uint16
	reads   []Read
}

// New returns a simulator for cfg. It panics if the register map does not
// fit in the 16-bit address space above Base, which is a programming error.
func New(cfg Config) *Simulator {
	cfg = cfg.withDefaults()
	chain := slices.Clone(baseChain)
	if cfg.CellTemps {
		chain = append(chain, modelBank)
	}
	if cfg.Meter {
		chain = append(chain, modelMeter)
	}
	s := &Simulator{
		cfg:   cfg,
		log:   cfg.Logger,
		lay:   newLayout(cfg.Base, chain),
		powSF: fitSF(max(cfg.MaxChargeW, cfg.MaxDischargeW)),
		whSF:  fitSF(cfg.CapacityWh),
		// Grid power (int16: twice the margin of fitSF's uint16) reaches
		// PV and full discharge, or the load's peaks and full charge.
		gridSF:     fitSF(2 * (cfg.PVPeakW + cfg.MaxDischargeW + cfg.MaxChargeW + cfg.BaseLoadW + 3200)),
		rng:        rand.New(rand.NewPCG(cfg.Seed, 0x6865617274680001)),
		energyWh:   cfg.InitialSoC / 100 * cfg.CapacityWh,
		exportWh:   1000, // acc32 0 would read as not implemented
		temp:       cfg.AmbientC,
		pinPV:      math.NaN(),
		pinLoad:    math.NaN(),
		pinTemp:    math.NaN(),
		pinCellMin: math.NaN(),
		pinCellMax: math.NaN(),
		pinTempMin: math.NaN(),
		pinTempMax: math.NaN(),
		gridImpWh:  1000, // acc32 0 would read as not implemented
		gridExpWh:  1000,
		raw:        map[uint16]uint16{},
	}
	now := cfg.Now()
	s.start, s.last = now, now
	s.initRegisters()
	s.instant(now)
	s.render()
	return s
}

// fitSF returns the smallest non-negative scale factor that fits v in a
// uint16 register.
func fitSF(v float64) int16 {
	var sf int16
	for v > 65534 {
		v /= 10
		sf++
	}
	return sf
}

// step brings the physics and the registers up to the clock's now.
// Callers hold s.mu.
func (s *Simulator) step() time.Time {
	now := s.cfg.Now()
	s.advance(now)
	s.render()
	return now
}

// State returns the simulation state at the clock's now.
func (s *Simulator) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.step()
	mode, cmd := s.command()
	if s.local {
		mode, cmd = ModeSelfConsumption, 0
	}
	cmin, cmax, _ := s.cellV()
	return State{
		Time:         now,
		SoCPct:       s.socPct(),
		EnergyWh:     s.energyWh,
		BatteryW:     hearth.Watts(s.batt),
		PVW:          hearth.Watts(s.pv),
		LoadW:        hearth.Watts(s.load),
		InverterW:    hearth.Watts(s.pv + s.batt),
		GridW:        hearth.Watts(s.pv + s.batt - s.load),
		TempC:        s.temp,
		CellVMin:     cmin,
		CellVMax:     cmax,
		BatteryV:     s.packV(),
		Hz:           s.hz,
		Mode:         mode,
		CommandW:     hearth.Watts(cmd),
		Reverted:     s.reverted,
		FlashWrites:  s.flash,
		Connected:    s.connected(),
		Local:        s.local,
		ExportedWh:   s.exportWh,
		DischargedWh: s.dischWh,
	}
}

// mutate integrates up to now, applies f, and refreshes the registers.
func (s *Simulator) mutate(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.step()
	f()
	s.instant(now)
	s.render()
}

// SetSoC sets the battery's state of charge in percent, clamped to 0–100.
// Physics carries on from there.
func (s *Simulator) SetSoC(pct float64) {
	s.mutate(func() { s.energyWh = clamp(pct, 0, 100) / 100 * s.cfg.CapacityWh })
}

// SetTemp pins the enclosure temperature (model 103 TmpCab) at c degrees
// Celsius; NaN releases it to drift again from that value.
func (s *Simulator) SetTemp(c float64) {
	s.mutate(func() {
		if !math.IsNaN(c) {
			s.temp = c
		}
		s.pinTemp = c
	})
}

// SetCellV pins the minimum and maximum cell voltages (model 802 CellVMin,
// CellVMax; the pack voltage follows their mean); NaN for both releases
// them to follow SoC again.
func (s *Simulator) SetCellV(minV, maxV float64) {
	s.mutate(func() { s.pinCellMin, s.pinCellMax = minV, maxV })
}

// SetCellTemp pins the lowest and highest module temperature (model 803
// ModTmpMin, ModTmpMax, when Config.CellTemps serves it) in degrees
// Celsius; NaN for both releases them to follow the enclosure again.
func (s *Simulator) SetCellTemp(minC, maxC float64) {
	s.mutate(func() { s.pinTempMin, s.pinTempMax = minC, maxC })
}

// SetPV pins PV production at w watts; NaN returns to the daily curve.
func (s *Simulator) SetPV(w float64) {
	s.mutate(func() { s.pinPV = w })
}

// SetLoad pins the house load at w watts; NaN returns to the daily curve.
func (s *Simulator) SetLoad(w float64) {
	s.mutate(func() { s.pinLoad = w })
}

// SetLocalControl puts the battery under local control (on) or back under
// remote control. Under local control model 802 LocRemCtl reads LOCAL (1)
// and the battery covers house load minus PV on its own, within
// MaxChargeW and MaxDischargeW, whatever model 124 commands: it reports
// what it does, W, A and ChaSt alike, and does not follow. SunSpec model
// 802 (model_802.json) enumerates LocRemCtl as REMOTE 0, LOCAL 1.
func (s *Simulator) SetLocalControl(on bool) {
	s.mutate(func() {
		s.local = on
		s.set(802, "LocRemCtl", float64(map[bool]int{false: locRemCtlRemote, true: locRemCtlLocal}[on]))
	})
}

// SetFault applies f to subsequent requests; the zero Fault clears it.
func (s *Simulator) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// takeFault returns the fault for the next request and counts it down.
func (s *Simulator) takeFault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault
	if s.fault.Requests > 0 {
		s.fault.Requests--
		if s.fault.Requests == 0 {
			s.fault = Fault{}
		}
	}
	return f
}

// Writes returns a copy of the write log, oldest first. The log keeps the
// latest 10000 writes.
func (s *Simulator) Writes() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneWrites(s.writes)
}

// cloneWrites copies a write log, values included.
func cloneWrites(ws []Write) []Write {
	out := make([]Write, len(ws))
	for i, w := range ws {
		w.Values = slices.Clone(w.Values)
		out[i] = w
	}
	return out
}

// appendBounded appends x to log, first dropping the oldest entries so
// that it keeps at most limit.
func appendBounded[T any](log []T, x T, limit int) []T {
	if len(log) >= limit {
		log = slices.Delete(log, 0, len(log)-limit+1)
	}
	return append(log, x)
}

// ModelAddr returns the address of model id's ID register.
func (s *Simulator) ModelAddr(id uint16) (uint16, bool) {
	a, ok := s.lay.start[id]
	return a, ok
}

// PointAddr returns the address of the first register of a point, by its
// SunSpec name.
func (s *Simulator) PointAddr(model uint16, point string) (uint16, bool) {
	l, ok := s.lay.points[key{model, point}]
	return l.addr, ok
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// SetRaw serves v in place of a point's true registers (model id and
// SunSpec point name, scale factors included) until ClearRaw: the device
// reports garbage, while its own behaviour follows the true value. v is
// the point's raw value, signed or not (-32768..65535 for a one-register
// point, e.g. 0x8000 for a scale factor that turns not implemented), big
// endian over the point's registers.
func (s *Simulator) SetRaw(model uint16, point string, v int64) error {
	l, ok := s.lay.points[key{model, point}]
	if !ok {
		return fmt.Errorf("model %d has no point %q here", model, point)
	}
	bits := 16 * int(l.def.Size)
	if bits < 64 && (v < -(1<<(bits-1)) || v >= 1<<bits) {
		return fmt.Errorf("%d.%s: %d does not fit %d registers", model, point, v, l.def.Size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := uint64(v)
	for i := range int(l.def.Size) {
		s.raw[l.addr+uint16(i)] = uint16(u >> (16 * (int(l.def.Size) - 1 - i)))
	}
	return nil
}

// ClearRaw serves the true registers again.
func (s *Simulator) ClearRaw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.raw)
}

// SetScaleFactor changes a scale factor the simulator really uses (unlike
// SetRaw): points are encoded with it from now on, and writes interpreted
// with it, as by a device whose configuration changed. It must be a
// sunssf point, and sf within SunSpec's -10..10; model 124 InOutWRte_SF
// also sets the range OutWRte and InWRte accept (±100 %, within int16).
func (s *Simulator) SetScaleFactor(model uint16, point string, sf int16) error {
	l, ok := s.lay.points[key{model, point}]
	if !ok || l.def.Type != "sunssf" {
		return fmt.Errorf("model %d has no scale factor %q here", model, point)
	}
	if sf < -10 || sf > 10 {
		return fmt.Errorf("%d.%s: %d is outside SunSpec's -10..10", model, point, sf)
	}
	s.mutate(func() { s.setRaw(model, point, uint16(sf)) })
	return nil
}
