package sim

import (
	"fmt"
	"math"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sunspec"
)

// baseChain is the model chain every simulator serves, in order after the
// SunS marker; the optional models (Config.CellTemps, Config.Meter) follow
// model 802, so the addresses of the base chain never move.
var baseChain = []uint16{1, 103, 124, 802}

// Optional models.
const (
	modelBank  = 803 // lithium-ion battery bank: module temperatures
	modelMeter = 203 // wye-connect three-phase meter at the grid connection
)

// repeats is how many repetitions of a model's repeating group the
// simulator serves: model 803 describes one string.
var repeats = map[uint16]int{modelBank: 1}

// key names a point: model id and SunSpec point name.
type key struct {
	model uint16
	name  string
}

type loc struct {
	addr uint16
	def  sunspec.PointDef
}

// layout is where every model and point sits; it is immutable after New.
type layout struct {
	chain    []uint16
	base     uint16
	end      uint16 // the end marker's ID register
	last     uint16 // last mapped register (end marker's L)
	start    map[uint16]uint16
	points   map[key]loc
	writable map[uint16]key // address → writable point
}

func newLayout(base uint16, chain []uint16) layout {
	l := layout{chain: chain, base: base, start: map[uint16]uint16{}, points: map[key]loc{},
		writable: map[uint16]key{}}
	addr := int(base) + 2
	for _, id := range chain {
		m := sunspec.Lookup(id)
		if m == nil {
			panic(fmt.Sprintf("sim: sunspec model %d unknown", id))
		}
		n := int(m.FixedLen) + repeats[id]*int(m.RepeatLen)
		if addr+2+n+2 > 0x10000 {
			panic(fmt.Sprintf("sim: register map at base %d overflows the address space", base))
		}
		l.start[id] = uint16(addr)
		for _, p := range m.Points {
			l.points[key{id, p.Name}] = loc{uint16(addr) + p.Offset, p}
		}
		// Repeated points by their own names (one repetition at most).
		for _, p := range m.RepeatPoints {
			if repeats[id] > 0 {
				l.points[key{id, p.Name}] = loc{uint16(addr) + 2 + m.FixedLen + p.Offset, p}
			}
		}
		addr += 2 + n
	}
	l.end = uint16(addr)
	l.last = uint16(addr + 1)
	for k := range writable {
		p, ok := l.points[k]
		if !ok || p.def.Size != 1 {
			panic(fmt.Sprintf("sim: writable point %d.%s is not a one-register point", k.model, k.name))
		}
		l.writable[p.addr] = k
	}
	return l
}

// mapped reports whether registers addr .. addr+n-1 are all in the map.
func (l *layout) mapped(addr, n uint16) bool {
	return addr >= l.base && int(addr)+int(n)-1 <= int(l.last)
}

// Fixed scale factors. Power and rated energy use fitSF so large
// configurations still fit their uint16 registers.
var fixedSF = map[key]int16{
	{103, "A_SF"}:   -2,
	{103, "V_SF"}:   -1,
	{103, "W_SF"}:   0,
	{103, "Hz_SF"}:  -2,
	{103, "VA_SF"}:  0,
	{103, "WH_SF"}:  0,
	{103, "DCA_SF"}: -2,
	{103, "DCV_SF"}: -1,
	{103, "DCW_SF"}: 0,
	{103, "Tmp_SF"}: -1,

	{124, "WChaDisChaGra_SF"}: 0,
	{124, "ChaState_SF"}:      -1,
	{124, "StorAval_SF"}:      -1,
	{124, "InBatV_SF"}:        -1,
	{124, "InOutWRte_SF"}:     -2,

	{802, "AHRtg_SF"}: 0,
	{802, "SoC_SF"}:   -1,
	{802, "DoD_SF"}:   -1,
	{802, "SoH_SF"}:   0,
	{802, "V_SF"}:     -1,
	{802, "CellV_SF"}: -3,
	{802, "A_SF"}:     -2,
	{802, "AMax_SF"}:  -1,
	{802, "W_SF"}:     0,

	{803, "CellV_SF"}:  -3,
	{803, "ModTmp_SF"}: -1,
	{803, "A_SF"}:      -2,
	{803, "SoH_SF"}:    0,
	{803, "SoC_SF"}:    -1,
	{803, "V_SF"}:      -1,

	{203, "A_SF"}:     -2,
	{203, "V_SF"}:     -1,
	{203, "Hz_SF"}:    -2,
	{203, "TotWh_SF"}: 0,
}

// writable lists the points a client may write, with their valid raw
// range (inclusive; for int16 points the range is signed).
var writable = map[key][2]int{
	{1, "DA"}: {1, 247},

	{124, "WChaMax"}:           {0, 65534},
	{124, "WChaGra"}:           {0, 65534},
	{124, "WDisChaGra"}:        {0, 65534},
	{124, "StorCtl_Mod"}:       {0, 3},
	{124, "OutWRte"}:           {-10000, 10000}, // ±100 % at InOutWRte_SF (checkWrite: at the one in force)
	{124, "InWRte"}:            {-10000, 10000},
	{124, "InOutWRte_WinTms"}:  {0, 65534},
	{124, "InOutWRte_RvrtTms"}: {0, 65534},
	{124, "InOutWRte_RmpTms"}:  {0, 65534},
	{124, "ChaGriSet"}:         {0, 1},

	{802, "SocRsvMax"}:   {0, 1000},
	{802, "SoCRsvMin"}:   {0, 1000},
	{802, "CtrlHb"}:      {0, 65535},
	{802, "AlmRst"}:      {0, 65535},
	{802, "SetOp"}:       {1, 2},
	{802, "SetInvState"}: {1, 3},
}

// Enumerations used below, with their SunSpec names.
const (
	chaStOff         = 1 // ChaSt OFF
	chaStEmpty       = 2 // ChaSt EMPTY
	chaStDischarging = 3 // ChaSt DISCHARGING
	chaStCharging    = 4 // ChaSt CHARGING
	chaStFull        = 5 // ChaSt FULL
	chaStHolding     = 6 // ChaSt HOLDING

	stSleeping = 2 // 103 St SLEEPING
	stMPPT     = 4 // 103 St MPPT

	stateDisconnected = 1 // 802 State DISCONNECTED
	stateConnected    = 3 // 802 State CONNECTED

	setOpConnect    = 1 // 802 SetOp CONNECT
	setOpDisconnect = 2 // 802 SetOp DISCONNECT

	locRemCtlRemote = 0 // 802 LocRemCtl REMOTE
	locRemCtlLocal  = 1 // 802 LocRemCtl LOCAL

	chaGriSetPV   = 0 // 124 ChaGriSet PV
	chaGriSetGrid = 1 // 124 ChaGriSet GRID

	storCtlCharge    = 1 << 0 // 124 StorCtl_Mod CHARGE
	storCtlDischarge = 1 << 1 // 124 StorCtl_Mod DiSCHARGE

	typLithiumIon = 4 // 802 Typ LITHIUM_ION

	invStarted = 3 // 802 SetInvState INVERTER_STARTED

	evt103OverTemp     = 1 << 7 // 103 Evt1 OVER_TEMP
	evt802OverTempAlm  = 1 << 1 // 802 Evt1 OVER_TEMP_ALARM
	evt802OverTempWarn = 1 << 2 // 802 Evt1 OVER_TEMP_WARNING
)

// Temperatures at which the over-temperature events are raised.
const (
	overTempWarnC  = 50
	overTempAlarmC = 60
)

// Battery pack: cells in series and the voltage window of one cell.
const (
	cellsInSeries = 16
	cellVEmpty    = 3.0
	cellVFull     = 3.6
	cellVNominal  = 3.2
	cellR         = 0.001 // ohm, internal resistance of one cell
	cellVLimitMin = 2.5
	cellVLimitMax = 3.65
)

// sentinel returns the not-implemented value of a point type.
func sentinel(typ string, size uint16) []uint16 {
	r := make([]uint16, size)
	fill := func(v uint16) {
		for i := range r {
			r[i] = v
		}
	}
	switch typ {
	case "int16", "sunssf", "pad":
		r[0] = 0x8000
	case "int32", "int64":
		r[0] = 0x8000
	case "uint16", "enum16", "bitfield16", "uint32", "enum32", "bitfield32", "uint64":
		fill(0xFFFF)
	case "float32":
		r[0] = 0x7FC0 // NaN
	}
	// acc16, acc32, acc64, count and string are zero.
	return r
}

// initRegisters lays out the whole map: sentinels everywhere, then the
// marker, model headers, scale factors, constant points and the defaults of
// the writable points. Callers hold s.mu or own s exclusively.
func (s *Simulator) initRegisters() {
	l := &s.lay
	s.regs = make([]uint16, int(l.last)-int(l.base)+1)
	s.regs[0], s.regs[1] = sunspec.Marker>>16, sunspec.Marker&0xFFFF
	for _, id := range l.chain {
		m := sunspec.Lookup(id)
		for _, p := range m.Points {
			s.setRaw(id, p.Name, sentinel(p.Type, p.Size)...)
		}
		if repeats[id] > 0 {
			for _, p := range m.RepeatPoints {
				s.setRaw(id, p.Name, sentinel(p.Type, p.Size)...)
			}
		}
		s.setRaw(id, "ID", id)
		s.setRaw(id, "L", m.FixedLen+uint16(repeats[id])*m.RepeatLen)
	}
	s.regs[l.end-l.base] = sunspec.EndModelID
	s.regs[l.last-l.base] = 0

	for k, sf := range fixedSF {
		if _, ok := l.points[k]; ok {
			s.setRaw(k.model, k.name, uint16(sf))
		}
	}
	s.setRaw(124, "WChaMax_SF", uint16(s.powSF))
	s.setRaw(802, "WChaDisChaMax_SF", uint16(s.powSF))
	s.setRaw(802, "WHRtg_SF", uint16(s.whSF))

	// Model 1.
	s.setRaw(1, "Mn", sunspec.EncodeString("hearth", 16)...)
	s.setRaw(1, "Md", sunspec.EncodeString("hearthsim", 16)...)
	s.setRaw(1, "Vr", sunspec.EncodeString(hearth.Version, 8)...)
	s.setRaw(1, "SN", sunspec.EncodeString(s.cfg.Serial, 16)...)
	s.setRaw(1, "DA", uint16(s.cfg.UnitID))

	// Model 103: TmpSnk, TmpTrns, TmpOt, VAr, PF, StVnd and EvtVnd1–4
	// stay not implemented on purpose, so drivers meet sentinels.
	s.set(103, "Evt2", 0)

	// Model 124 writable defaults.
	s.set(124, "WChaMax", s.cfg.MaxChargeW)
	s.set(124, "WChaGra", 100)
	s.set(124, "WDisChaGra", 100)
	s.set(124, "StorCtl_Mod", 0)
	s.set(124, "OutWRte", 0)
	s.set(124, "InWRte", 0)
	s.set(124, "InOutWRte_WinTms", 0)
	s.set(124, "InOutWRte_RvrtTms", 0)
	s.set(124, "InOutWRte_RmpTms", 0)
	s.set(124, "ChaGriSet", chaGriSetGrid)

	// Model 802 constants and writable defaults.
	nominalV := cellsInSeries * cellVNominal
	s.set(802, "AHRtg", s.cfg.CapacityWh/nominalV)
	s.set(802, "WHRtg", s.cfg.CapacityWh)
	s.set(802, "WChaRteMax", s.cfg.MaxChargeW)
	s.set(802, "WDisChaRteMax", s.cfg.MaxDischargeW)
	s.set(802, "SoCMax", 100)
	s.set(802, "SoCMin", 0)
	s.set(802, "SocRsvMax", 100)
	s.set(802, "SoCRsvMin", 0)
	s.set(802, "SoH", 100)
	s.set(802, "LocRemCtl", locRemCtlRemote)
	s.set(802, "CtrlHb", 0)
	s.set(802, "AlmRst", 0)
	s.set(802, "Typ", typLithiumIon)
	s.set(802, "Evt2", 0)
	s.set(802, "EvtVnd1", 0)
	s.set(802, "EvtVnd2", 0)
	s.set(802, "VMax", cellsInSeries*cellVLimitMax)
	s.set(802, "VMin", cellsInSeries*cellVLimitMin)
	s.set(802, "CellVMaxStr", 1)
	s.set(802, "CellVMaxMod", 1)
	s.set(802, "CellVMinStr", 1)
	s.set(802, "CellVMinMod", 3)
	s.set(802, "AChaMax", s.cfg.MaxChargeW/nominalV)
	s.set(802, "ADisChaMax", s.cfg.MaxDischargeW/nominalV)
	s.set(802, "SetOp", setOpConnect)
	s.set(802, "SetInvState", invStarted)

	if s.has(modelBank) {
		s.set(modelBank, "NStr", 1)
		s.set(modelBank, "NStrCon", 1)
		s.set(modelBank, "ModTmpMaxStr", 1)
		s.set(modelBank, "ModTmpMaxMod", 1)
		s.set(modelBank, "ModTmpMinStr", 1)
		s.set(modelBank, "ModTmpMinMod", 1)
		s.set(modelBank, "NCellBal", 0)
		s.set(modelBank, "StrNMod", 1)
		s.setRaw(modelBank, "StrSt", 0, 0)
		s.setRaw(modelBank, "StrEvt1", 0, 0)
		s.set(modelBank, "StrSoH", 100)
	}
	if s.has(modelMeter) {
		s.setRaw(modelMeter, "W_SF", uint16(s.gridSF))
		s.setRaw(modelMeter, "Evt", 0, 0)
	}
}

// has reports whether the simulator serves model id.
func (s *Simulator) has(id uint16) bool {
	_, ok := s.lay.start[id]
	return ok
}

// render writes the measured points from the physics state. Callers hold
// s.mu.
func (s *Simulator) render() {
	soc := s.socPct()
	packV := s.packV()
	cmin, cmax, cavg := s.cellV()
	ac := s.pv + s.batt

	// Model 103: three balanced phases.
	s.set(103, "W", ac)
	s.set(103, "VA", math.Abs(ac))
	s.set(103, "Hz", s.hz)
	var amps float64
	for i, ph := range []string{"A", "B", "C"} {
		a := math.Abs(ac) / 3 / s.vph[i]
		amps += a
		s.set(103, "Aph"+ph, a)
		s.set(103, "PhVph"+ph, s.vph[i])
	}
	s.set(103, "A", amps)
	s.set(103, "PPVphAB", (s.vph[0]+s.vph[1])/2*math.Sqrt(3))
	s.set(103, "PPVphBC", (s.vph[1]+s.vph[2])/2*math.Sqrt(3))
	s.set(103, "PPVphCA", (s.vph[2]+s.vph[0])/2*math.Sqrt(3))
	s.set(103, "WH", s.exportWh)
	dcV := 0.0
	if s.pv > 0 {
		dcV = 360 + 40*s.pv/s.cfg.PVPeakW
	}
	s.set(103, "DCV", dcV)
	s.set(103, "DCW", s.pv)
	if dcV > 0 {
		s.set(103, "DCA", s.pv/dcV)
	} else {
		s.set(103, "DCA", 0)
	}
	s.set(103, "TmpCab", s.temp)
	st := stSleeping
	if math.Abs(ac) >= 1 || math.Abs(s.batt) >= 1 {
		st = stMPPT
	}
	s.set(103, "St", float64(st))
	var evt103 float64
	if s.temp >= overTempAlarmC {
		evt103 = evt103OverTemp
	}
	s.set(103, "Evt1", evt103)

	// Model 124.
	chaSt := s.chaSt()
	s.set(124, "ChaState", soc)
	s.set(124, "StorAval", s.energyWh/(cellsInSeries*cellVNominal))
	s.set(124, "InBatV", packV)
	s.set(124, "ChaSt", float64(chaSt))
	if s.cfg.InvertPowerSign {
		s.setRaw(124, "ChaSt", 0xFFFF)
	}

	// Model 802.
	s.set(802, "SoC", soc)
	s.set(802, "DoD", 100-soc)
	s.set(802, "NCyc", math.Floor(s.dischWh/s.cfg.CapacityWh))
	s.set(802, "ChaSt", float64(chaSt))
	if s.cfg.InvertPowerSign {
		s.setRaw(802, "ChaSt", 0xFFFF)
	}
	s.set(802, "Hb", math.Mod(math.Max(0, s.last.Sub(s.start).Seconds()), 65535))
	state := stateConnected
	if !s.connected() {
		state = stateDisconnected
	}
	s.set(802, "State", float64(state))
	var evt802 float64
	if s.temp >= overTempAlarmC {
		evt802 += evt802OverTempAlm
	}
	if s.temp >= overTempWarnC {
		evt802 += evt802OverTempWarn
	}
	s.set(802, "Evt1", evt802)
	s.set(802, "V", packV)
	s.set(802, "CellVMax", cmax)
	s.set(802, "CellVMin", cmin)
	s.set(802, "CellVAvg", cavg)
	reported := s.batt
	if s.cfg.InvertPowerSign {
		reported = -reported
	}
	s.set(802, "A", reported/packV)
	s.set(802, "W", reported)

	if s.has(modelBank) {
		tmin, tmax := s.cellTemp()
		for _, p := range []string{"ModTmpMin", "StrModTmpMin"} {
			s.set(modelBank, p, tmin)
		}
		for _, p := range []string{"ModTmpMax", "StrModTmpMax"} {
			s.set(modelBank, p, tmax)
		}
		s.set(modelBank, "ModTmpAvg", (tmin+tmax)/2)
		s.set(modelBank, "StrModTmpAvg", (tmin+tmax)/2)
		for _, p := range []string{"StrVMax", "StrVMin", "StrVAvg"} {
			s.set(modelBank, p, packV)
		}
		for _, p := range []string{"StrAMax", "StrAMin", "StrAAvg", "StrA"} {
			s.set(modelBank, p, s.batt/packV)
		}
		s.set(modelBank, "StrSoC", soc)
		s.set(modelBank, "StrCellVMax", cmax)
		s.set(modelBank, "StrCellVMin", cmin)
		s.set(modelBank, "StrCellVAvg", cavg)
	}
	if s.has(modelMeter) {
		// Grid power in the meter's sign: positive importing, unless
		// the meter is configured the other way round.
		grid := ac - s.load // positive exporting
		w := -grid
		if s.cfg.MeterExportPositive {
			w = grid
		}
		s.set(modelMeter, "W", w)
		for _, ph := range []string{"A", "B", "C"} {
			s.set(modelMeter, "Wph"+ph, w/3)
		}
		var amps float64
		for i, ph := range []string{"A", "B", "C"} {
			a := math.Abs(grid) / 3 / s.vph[i]
			amps += a
			s.set(modelMeter, "Aph"+ph, a)
			s.set(modelMeter, "PhVph"+ph, s.vph[i])
		}
		s.set(modelMeter, "A", amps)
		s.set(modelMeter, "PhV", (s.vph[0]+s.vph[1]+s.vph[2])/3)
		s.set(modelMeter, "PhVphAB", (s.vph[0]+s.vph[1])/2*math.Sqrt(3))
		s.set(modelMeter, "PhVphBC", (s.vph[1]+s.vph[2])/2*math.Sqrt(3))
		s.set(modelMeter, "PhVphCA", (s.vph[2]+s.vph[0])/2*math.Sqrt(3))
		s.set(modelMeter, "PPV", (s.vph[0]+s.vph[1]+s.vph[2])/3*math.Sqrt(3))
		s.set(modelMeter, "Hz", s.hz)
		s.set(modelMeter, "TotWhImp", s.gridImpWh)
		s.set(modelMeter, "TotWhExp", s.gridExpWh)
	}
}

// cellTemp returns the lowest and highest module temperature: pinned
// values, else the enclosure's, the warmest module a degree above the
// coolest.
func (s *Simulator) cellTemp() (minC, maxC float64) {
	minC, maxC = s.temp-0.5, s.temp+0.5
	if !math.IsNaN(s.pinTempMin) {
		minC = s.pinTempMin
	}
	if !math.IsNaN(s.pinTempMax) {
		maxC = s.pinTempMax
	}
	return minC, maxC
}

func (s *Simulator) chaSt() int {
	switch {
	case !s.connected():
		return chaStOff
	case s.batt >= 0.5:
		return chaStDischarging
	case s.batt <= -0.5:
		return chaStCharging
	case s.energyWh >= s.cfg.CapacityWh:
		return chaStFull
	case s.energyWh <= 0:
		return chaStEmpty
	}
	return chaStHolding
}

func (s *Simulator) loc(model uint16, name string) loc {
	l, ok := s.lay.points[key{model, name}]
	if !ok {
		panic(fmt.Sprintf("sim: model %d has no point %s", model, name))
	}
	return l
}

// reg returns the register slice of a point.
func (s *Simulator) reg(model uint16, name string) []uint16 {
	l := s.loc(model, name)
	i := int(l.addr - s.lay.base)
	return s.regs[i : i+int(l.def.Size)]
}

func (s *Simulator) setRaw(model uint16, name string, regs ...uint16) {
	r := s.reg(model, name)
	if len(regs) != len(r) {
		panic(fmt.Sprintf("sim: %d.%s takes %d registers, got %d", model, name, len(r), len(regs)))
	}
	copy(r, regs)
}

// sfOf returns the scale factor that applies to a point, 0 when none.
func (s *Simulator) sfOf(model uint16, def sunspec.PointDef) int16 {
	if def.SF == "" {
		return 0
	}
	return int16(s.reg(model, def.SF)[0])
}

// set encodes v into a numeric point, applying its scale factor and
// clamping to the type's range short of its not-implemented sentinel.
func (s *Simulator) set(model uint16, name string, v float64) {
	l := s.loc(model, name)
	raw := math.Round(v / math.Pow10(int(s.sfOf(model, l.def))))
	if math.IsNaN(raw) {
		raw = 0
	}
	r := s.reg(model, name)
	switch l.def.Type {
	case "int16":
		r[0] = uint16(int16(clamp(raw, -32767, 32767)))
	case "uint16", "enum16", "bitfield16":
		r[0] = uint16(clamp(raw, 0, 65534))
	case "acc32":
		u := uint32(math.Mod(math.Max(raw, 0), 1<<32))
		r[0], r[1] = uint16(u>>16), uint16(u)
	case "uint32", "enum32", "bitfield32":
		u := uint32(clamp(raw, 0, 1<<32-2))
		r[0], r[1] = uint16(u>>16), uint16(u)
	default:
		panic(fmt.Sprintf("sim: cannot encode %d.%s of type %s", model, name, l.def.Type))
	}
}

// get decodes a single-register numeric point with its scale factor.
func (s *Simulator) get(model uint16, name string) float64 {
	l := s.loc(model, name)
	raw := sunspec.Raw(l.def.Type, s.reg(model, name))
	return sunspec.Scale(raw, s.sfOf(model, l.def))
}
