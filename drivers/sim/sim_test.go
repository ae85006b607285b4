package sim

import (
	"github.com/hearth-energy/hearth/internal/clocktest"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sunspec"
)

func TestModelChain(t *testing.T) {
	t.Parallel()
	_, addr := startSim(t, Config{Serial: "SN-42", Now: clocktest.New(noon).Now})
	c := dial(t, addr)

	got := walk(c, 40000)
	want := []model{
		{id: 1, len: sunspec.Lookup(1).FixedLen, addr: 40002},
		{id: 103, len: sunspec.Lookup(103).FixedLen, addr: 40070},
		{id: 124, len: sunspec.Lookup(124).FixedLen, addr: 40122},
		{id: 802, len: sunspec.Lookup(802).FixedLen, addr: 40148},
		{id: 0xFFFF, len: 0, addr: 40212},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("model chain\n got %+v\nwant %+v", got, want)
	}

	d := discover(c, 40000)
	for _, tc := range []struct{ point, want string }{
		{"Mn", "hearth"}, {"Md", "hearthsim"}, {"SN", "SN-42"}, {"Vr", "dev"},
	} {
		if got := sunspec.String(d.regs(1, tc.point)); got != tc.want {
			t.Errorf("model 1 %s = %q, want %q", tc.point, got, tc.want)
		}
	}
}

func TestBaseAddresses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		base uint16
	}{
		{Config{}, 40000},
		{Config{ZeroBase: true}, 0},
		{Config{Base: 50000}, 50000},
	} {
		s := New(tc.cfg)
		resp, ok := s.Handle(1, readPDU(fcReadInput, tc.base, 4))
		regs, err := decodeRead(resp, 4)
		if !ok || err != nil {
			t.Fatalf("base %d: read ok=%v err=%v", tc.base, ok, err)
		}
		if want := []uint16{0x5375, 0x6e53, 1, 66}; !slices.Equal(regs, want) {
			t.Errorf("base %d: got %04x, want %04x", tc.base, regs, want)
		}
		if a, _ := s.ModelAddr(802); a != tc.base+148 {
			t.Errorf("base %d: model 802 at %d, want %d", tc.base, a, tc.base+148)
		}
	}
}

// TestSentinels checks every point of the map either holds a value or the
// not-implemented sentinel for its type, consistently with scale factors:
// mandatory points are implemented, a scale factor is implemented exactly
// when a point it scales is, and the deliberately absent points are absent.
func TestSentinels(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{}, {CellTemps: true, Meter: true}} {
		cfg.Now = clocktest.New(noon).Now
		s := New(cfg)
		for _, id := range s.lay.chain {
			m := sunspec.Lookup(id)
			points := m.Points
			if repeats[id] > 0 {
				points = append(slices.Clone(points), m.RepeatPoints...)
			}
			used := map[string]bool{}
			for _, p := range points {
				impl := !sunspec.IsNotImplemented(p.Type, s.reg(id, p.Name))
				if p.Mandatory && !impl {
					t.Errorf("%d.%s is mandatory but not implemented", id, p.Name)
				}
				if p.SF != "" && impl {
					used[p.SF] = true
				}
			}
			for _, p := range points {
				if p.Type != "sunssf" {
					continue
				}
				impl := !sunspec.IsNotImplemented(p.Type, s.reg(id, p.Name))
				if impl != used[p.Name] {
					t.Errorf("%d.%s implemented=%v, but points scaled by it implemented=%v",
						id, p.Name, impl, used[p.Name])
				}
			}
		}
		for _, name := range []string{"TmpSnk", "TmpTrns", "TmpOt", "VAr", "PF"} {
			if r := s.reg(103, name); r[0] != 0x8000 {
				t.Errorf("103.%s = %04x, want 8000", name, r[0])
			}
		}
		if r := s.reg(124, "MinRsvPct"); r[0] != 0xFFFF {
			t.Errorf("124.MinRsvPct = %04x, want ffff", r[0])
		}
	}
}

func TestSoCRegisterMatchesState(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s, addr := startSim(t, Config{InitialSoC: 63.4, Now: clk.Now})
	d := discover(dial(t, addr), 40000)
	clk.Advance(7 * time.Minute)

	soc := d.value(802, "SoC")
	st := s.State()
	if !near(soc, st.SoCPct, 0.05) {
		t.Errorf("802 SoC = %.2f, State().SoCPct = %.3f", soc, st.SoCPct)
	}
	if st.SoCPct == 63.4 {
		t.Errorf("SoC did not move in 7 minutes of self-consumption at noon")
	}
	if got := d.value(124, "ChaState"); !near(got, st.SoCPct, 0.05) {
		t.Errorf("124 ChaState = %.2f, want %.2f", got, st.SoCPct)
	}
	if sf := int16(d.regs(802, "SoC_SF")[0]); sf != -1 {
		t.Errorf("SoC_SF = %d, want -1", sf)
	}
}

func TestDischargeCommand(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s, addr := startSim(t, Config{InitialSoC: 80, Now: clk.Now})
	c := dial(t, addr)
	d := discover(c, 40000)

	// hearth commands +2000 W: DISCHARGE bit, OutWRte = 2000/WChaMax·100 %.
	wchamax := d.value(124, "WChaMax")
	if wchamax != 5000 {
		t.Fatalf("WChaMax = %v, want 5000", wchamax)
	}
	c.write(d.addr(124, "OutWRte"), uint16(math.Round(2000/wchamax*100/0.01)))
	c.write(d.addr(124, "StorCtl_Mod"), 2)

	clk.Advance(30 * time.Minute)
	if got := d.value(802, "W"); got != 2000 {
		t.Errorf("802 W = %v, want 2000", got)
	}
	st := s.State()
	if st.BatteryW != 2000 || st.Mode != ModeDischarge {
		t.Errorf("State: battery %v W mode %s, want 2000 W discharge", st.BatteryW, st.Mode)
	}
	// 2000 W for 30 min is 1000 Wh at the AC side, 1000/0.95 from the cells.
	want := 80 - 1000/0.95/10000*100
	if got := d.value(802, "SoC"); !near(got, want, 1) {
		t.Errorf("SoC after 30 min at 2 kW = %.2f, want %.2f ± 1", got, want)
	}
	if got, want := d.value(103, "W"), float64(st.PVW)+2000; !near(got, want, 1) {
		t.Errorf("103 W = %v, want PV + battery = %v", got, want)
	}
	if got := d.value(802, "ChaSt"); got != chaStDischarging {
		t.Errorf("802 ChaSt = %v, want DISCHARGING", got)
	}
}

func TestChargeCommand(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon.Add(-12 * time.Hour)) // midnight: no PV
	s, addr := startSim(t, Config{InitialSoC: 20, Now: clk.Now})
	c := dial(t, addr)
	d := discover(c, 40000)

	// OutWRte, InWRte, WinTms, RvrtTms in one write; then CHARGE at 30 %.
	c.write(d.addr(124, "OutWRte"), 0, 3000, 0, 0)
	c.write(d.addr(124, "StorCtl_Mod"), 1)
	clk.Advance(time.Hour)

	if got := d.value(802, "W"); got != -1500 {
		t.Errorf("802 W = %v, want -1500", got)
	}
	if got := d.value(802, "A"); got >= 0 {
		t.Errorf("802 A = %v, want negative while charging", got)
	}
	want := 20 + 1500*0.95/10000*100
	if got := s.State().SoCPct; !near(got, want, 0.01) {
		t.Errorf("SoC after 1 h at -1.5 kW = %.3f, want %.3f", got, want)
	}
	if got := d.value(124, "ChaSt"); got != chaStCharging {
		t.Errorf("124 ChaSt = %v, want CHARGING", got)
	}
}

// TestDischargeReference: with DischargeReference, OutWRte is a
// percentage of model 802 WDisChaRteMax (MaxDischargeW) and InWRte still
// of WChaMax; without it WChaMax is the reference both ways.
func TestDischargeReference(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		perDirection bool
		mod, out, in uint16
		want         float64
	}{
		{false, 2, 5000, 0, 3000}, // 50 % of WChaMax 6000 W
		{true, 2, 5000, 0, 3500},  // 50 % of WDisChaRteMax 7000 W
		{false, 1, 0, 5000, -3000},
		{true, 1, 0, 5000, -3000},
	} {
		clk := clocktest.New(noon.Add(-12 * time.Hour)) // midnight: no PV
		s, addr := startSim(t, Config{InitialSoC: 50, MaxChargeW: 6000, MaxDischargeW: 7000, DischargeReference: c.perDirection, Now: clk.Now})
		conn := dial(t, addr)
		d := discover(conn, 40000)
		if got := d.value(802, "WDisChaRteMax"); got != 7000 {
			t.Fatalf("802 WDisChaRteMax = %v, want 7000", got)
		}
		conn.write(d.addr(124, "OutWRte"), c.out, c.in, 0, 0)
		conn.write(d.addr(124, "StorCtl_Mod"), c.mod)
		clk.Advance(time.Second)
		if got := s.State().BatteryW; float64(got) != c.want {
			t.Errorf("DischargeReference %t, StorCtl_Mod %d, OutWRte %d, InWRte %d: battery %v W, want %v", c.perDirection, c.mod, c.out, c.in, got, c.want)
		}
	}
}

// TestLocalControl: under local control the battery runs its own
// self-consumption whatever model 124 commands, and says so in every
// register that reports it: LocRemCtl LOCAL, W, A and ChaSt all charging
// from the PV surplus. Back under remote control it follows the command
// it holds.
func TestLocalControl(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s, addr := startSim(t, Config{InitialSoC: 50, Now: clk.Now})
	c := dial(t, addr)
	d := discover(c, 40000)
	s.SetPV(1800)
	s.SetLoad(300)
	s.SetLocalControl(true)

	// DISCHARGE at 40 % of WChaMax (2000 W): a command it does not follow.
	c.write(d.addr(124, "OutWRte"), 4000)
	c.write(d.addr(124, "StorCtl_Mod"), 2)
	clk.Advance(time.Minute)
	if got := d.value(124, "StorCtl_Mod"); got != 2 {
		t.Errorf("124 StorCtl_Mod reads %v under local control, want the 2 written", got)
	}
	for _, tc := range []struct {
		model uint16
		point string
		check func(float64) bool
		want  string
	}{
		{802, "LocRemCtl", func(v float64) bool { return v == locRemCtlLocal }, "LOCAL (1)"},
		{802, "W", func(v float64) bool { return v == -1500 }, "-1500 (charging the PV surplus)"},
		{802, "A", func(v float64) bool { return v < 0 }, "negative"},
		{802, "ChaSt", func(v float64) bool { return v == chaStCharging }, "CHARGING"},
		{124, "ChaSt", func(v float64) bool { return v == chaStCharging }, "CHARGING"},
	} {
		if got := d.value(tc.model, tc.point); !tc.check(got) {
			t.Errorf("under local control %d %s = %v, want %s", tc.model, tc.point, got, tc.want)
		}
	}
	if st := s.State(); st.BatteryW != -1500 || !st.Local || st.Mode != ModeSelfConsumption || st.CommandW != 0 {
		t.Errorf("State under local control: %v W, local %t, mode %s, command %v W; want -1500 W, local, self-consumption, no command", st.BatteryW, st.Local, st.Mode, st.CommandW)
	}

	s.SetLocalControl(false)
	clk.Advance(time.Second)
	if got := d.value(802, "LocRemCtl"); got != locRemCtlRemote {
		t.Errorf("802 LocRemCtl = %v back under remote control, want REMOTE (0)", got)
	}
	if got := d.value(802, "W"); got != 2000 {
		t.Errorf("802 W = %v back under remote control, want the 2000 W commanded", got)
	}
	if got := d.value(802, "ChaSt"); got != chaStDischarging {
		t.Errorf("802 ChaSt = %v back under remote control, want DISCHARGING", got)
	}
}

func TestRevertTimer(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s, addr := startSim(t, Config{Now: clk.Now})
	s.SetPV(3000)
	s.SetLoad(500) // self-consumption would charge at 2500 W
	c := dial(t, addr)
	d := discover(c, 40000)

	c.write(d.addr(124, "InOutWRte_RvrtTms"), 10)
	c.write(d.addr(124, "OutWRte"), 4000) // 40 % of 5000 W
	c.write(d.addr(124, "StorCtl_Mod"), 2)

	clk.Advance(5 * time.Second)
	c.write(d.addr(124, "OutWRte"), 4000) // restarts the timer: reverts at 15 s
	clk.Advance(9 * time.Second)
	if st := s.State(); st.Mode != ModeDischarge || st.BatteryW != 2000 || st.Reverted {
		t.Fatalf("at 14 s: mode %s battery %v reverted %v, want discharge at 2000 W",
			st.Mode, st.BatteryW, st.Reverted)
	}
	clk.Advance(2 * time.Second)
	st := s.State()
	if st.Mode != ModeSelfConsumption || !st.Reverted || st.BatteryW != -2500 {
		t.Errorf("at 16 s: mode %s battery %v reverted %v, want self-consumption at -2500 W",
			st.Mode, st.BatteryW, st.Reverted)
	}
	if got := d.value(124, "StorCtl_Mod"); got != 0 {
		t.Errorf("StorCtl_Mod after revert = %v, want 0", got)
	}
	if got := d.value(802, "W"); got != -2500 {
		t.Errorf("802 W after revert = %v, want -2500", got)
	}

	// A fresh command clears Reverted; 11 s without a write reverts it.
	c.write(d.addr(124, "StorCtl_Mod"), 2)
	if st := s.State(); st.Reverted || st.Mode != ModeDischarge {
		t.Fatalf("after new command: mode %s reverted %v", st.Mode, st.Reverted)
	}
	before := s.State().EnergyWh
	// Sample off the whole second, so the integration steps do not land
	// on the deadline by themselves.
	clk.Advance(300 * time.Millisecond)
	s.State()
	clk.Advance(10700 * time.Millisecond)
	st = s.State()
	if !st.Reverted || st.Mode != ModeSelfConsumption {
		t.Errorf("after 11 s: mode %s reverted %v, want reverted", st.Mode, st.Reverted)
	}
	// 10 s discharging at 2000 W then 1 s charging at 2500 W.
	want := before - 2000*10/3600.0/0.95 + 2500*1/3600.0*0.95
	if !near(st.EnergyWh, want, 0.01) {
		t.Errorf("energy = %.4f Wh, want %.4f: revert not applied at its deadline", st.EnergyWh, want)
	}
}

func TestRevertTimerZeroNeverReverts(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s := New(Config{Now: clk.Now})
	d, _ := s.PointAddr(124, "StorCtl_Mod")
	o, _ := s.PointAddr(124, "OutWRte")
	for _, req := range [][]byte{writePDU(o, 1000), writePDU(d, 2)} {
		if resp, ok := s.Handle(1, req); !ok || resp[0]&0x80 != 0 {
			t.Fatalf("write % x: % x", req, resp)
		}
	}
	clk.Advance(24 * time.Hour)
	if st := s.State(); st.Mode != ModeDischarge || st.Reverted {
		t.Errorf("RvrtTms 0: after a day mode %s reverted %v, want discharge", st.Mode, st.Reverted)
	}
}

func TestSelfConsumptionAndLimits(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s := New(Config{Now: clk.Now, InitialSoC: 50})
	for _, tc := range []struct {
		pv, load float64
		soc      float64
		want     float64
	}{
		{0, 1200, 50, 1200},
		{0, 8000, 50, 5000},       // discharge limit
		{9000, 300, 50, -5000},    // charge limit
		{3000, 500, 50, -2500},    // surplus charges
		{0, 1200, 0, 0},           // empty: no discharge
		{3000, 500, 100, 0},       // full: no charge
		{1000, 1000, 50, 0},       // balanced
		{4000, 500, 99.99, -3500}, // not yet full
	} {
		s.SetPV(tc.pv)
		s.SetLoad(tc.load)
		s.SetSoC(tc.soc)
		if got := s.State().BatteryW; !near(float64(got), tc.want, 1e-9) {
			t.Errorf("pv %v load %v soc %v: battery %v W, want %v", tc.pv, tc.load, tc.soc, got, tc.want)
		}
	}

	// Stepping past full stops charging at exactly full.
	s.SetSoC(99.9)
	clk.Advance(time.Hour)
	if st := s.State(); st.SoCPct != 100 || st.BatteryW != 0 {
		t.Errorf("after 1 h of surplus from 99.9 %%: SoC %v battery %v, want 100 and 0", st.SoCPct, st.BatteryW)
	}
	if got := s.get(802, "ChaSt"); got != chaStFull {
		t.Errorf("ChaSt at full = %v, want FULL", got)
	}
}

func TestCommandAtEmptyBattery(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s := New(Config{Now: clk.Now})
	s.SetSoC(1)
	o, _ := s.PointAddr(124, "OutWRte")
	m, _ := s.PointAddr(124, "StorCtl_Mod")
	s.Handle(1, writePDU(o, 10000)) // 100 % = 5000 W
	s.Handle(1, writePDU(m, 2))
	clk.Advance(time.Hour) // 1 % is 100 Wh: empty after ~68 s
	st := s.State()
	if st.SoCPct != 0 || st.BatteryW != 0 {
		t.Errorf("SoC %v battery %v, want 0 and 0", st.SoCPct, st.BatteryW)
	}
	if !near(st.DischargedWh, 100*0.95, 1e-6) {
		t.Errorf("discharged %v Wh, want %v", st.DischargedWh, 100*0.95)
	}
	if got := s.get(802, "ChaSt"); got != chaStEmpty {
		t.Errorf("ChaSt = %v, want EMPTY", got)
	}
}

func TestPVAndLoadCurves(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(time.Date(2026, 6, 21, 2, 0, 0, 0, time.UTC))
	s := New(Config{Now: clk.Now, PVPeakW: 4000, InitialSoC: 50})
	st := s.State()
	if st.PVW != 0 || st.LoadW < 300 || st.LoadW > 310 || st.BatteryW != st.LoadW {
		t.Errorf("02:00: pv %v load %v battery %v, want no PV and battery covering ~300 W load",
			st.PVW, st.LoadW, st.BatteryW)
	}
	clk.Advance(4 * time.Hour) // 06:00, sunrise
	dawn := s.State()
	if dawn.PVW != 0 || dawn.SoCPct >= 45 || dawn.SoCPct < 30 {
		t.Errorf("06:00: PV %v SoC %.1f, want no PV and SoC drawn down by ~1.3 kWh of night load",
			dawn.PVW, dawn.SoCPct)
	}
	clk.Advance(6 * time.Hour) // noon
	st = s.State()
	if !near(float64(st.PVW), 4000, 1e-6) {
		t.Errorf("noon PV = %v, want 4000", st.PVW)
	}
	if st.SoCPct <= dawn.SoCPct {
		t.Errorf("SoC at noon %.1f, want above dawn's %.1f: the morning PV surplus charges", st.SoCPct, dawn.SoCPct)
	}
	clk.Advance(7 * time.Hour) // 19:00: evening peak
	if st := s.State(); st.LoadW < 2000 {
		t.Errorf("19:00 load = %v, want the evening peak", st.LoadW)
	}
}

func TestTemperatureAndCells(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon.Add(-12 * time.Hour))
	s := New(Config{Now: clk.Now, InitialSoC: 90})
	s.SetLoad(5000)
	clk.Advance(time.Hour)
	if st := s.State(); st.TempC < 33 {
		t.Errorf("temperature after 1 h at 5 kW = %.1f, want well above 25", st.TempC)
	}
	s.SetTemp(65)
	if got := s.get(103, "TmpCab"); got != 65 {
		t.Errorf("TmpCab = %v, want 65", got)
	}
	if evt := s.reg(103, "Evt1"); evt[1]&evt103OverTemp == 0 {
		t.Errorf("103 Evt1 = %04x, want OVER_TEMP", evt)
	}
	clk.Advance(time.Hour)
	if got := s.State().TempC; got != 65 {
		t.Errorf("pinned temperature drifted to %v", got)
	}

	s.SetLoad(0)
	s.SetPV(0)
	s.SetSoC(20)
	low := s.State()
	s.SetSoC(80)
	high := s.State()
	for _, st := range []State{low, high} {
		if st.CellVMin >= st.CellVMax || st.CellVMin < 3.0 || st.CellVMax > 3.6 {
			t.Errorf("SoC %v: cells %.3f–%.3f V, want min < max within 3.0–3.6", st.SoCPct, st.CellVMin, st.CellVMax)
		}
	}
	if high.CellVMin <= low.CellVMax || high.BatteryV <= low.BatteryV {
		t.Errorf("cells at 80 %% (%.3f–%.3f V) not above cells at 20 %% (%.3f–%.3f V)",
			high.CellVMin, high.CellVMax, low.CellVMin, low.CellVMax)
	}
	s.SetCellV(2.9, 3.3)
	if lo, hi := s.get(802, "CellVMin"), s.get(802, "CellVMax"); lo != 2.9 || hi != 3.3 {
		t.Errorf("CellVMin/Max = %v/%v, want 2.9/3.3", lo, hi)
	}
	if got := s.get(802, "V"); got != 16*3.1 {
		t.Errorf("pack V = %v, want %v", got, 16*3.1)
	}
}

func TestHandleExceptions(t *testing.T) {
	t.Parallel()
	s := New(Config{Now: clocktest.New(noon).Now})
	mod, _ := s.PointAddr(124, "StorCtl_Mod")
	out, _ := s.PointAddr(124, "OutWRte")
	chaState, _ := s.PointAddr(124, "ChaState")
	for _, tc := range []struct {
		name string
		pdu  []byte
		want byte // 0: a normal response
	}{
		{"read ok", readPDU(fcReadHolding, 40000, 125), 0},
		{"read input ok", readPDU(fcReadInput, 40212, 2), 0},
		{"read below base", readPDU(fcReadHolding, 39999, 2), ExceptionIllegalDataAddress},
		{"read past end", readPDU(fcReadHolding, 40210, 5), ExceptionIllegalDataAddress},
		{"read after end", readPDU(fcReadHolding, 40214, 1), ExceptionIllegalDataAddress},
		{"read count 0", readPDU(fcReadHolding, 40000, 0), ExceptionIllegalDataValue},
		{"read count 126", readPDU(fcReadHolding, 40000, 126), ExceptionIllegalDataValue},
		{"read short pdu", []byte{fcReadHolding, 0x9c, 0x40, 0}, ExceptionIllegalDataValue},
		{"read coils", readPDU(0x01, 0, 1), ExceptionIllegalFunction},
		{"unknown function", []byte{0x2B, 0x0E, 1, 0}, ExceptionIllegalFunction},
		{"write read-only", writePDU(chaState, 1), ExceptionIllegalDataAddress},
		{"write unmapped", writePDU(30000, 1), ExceptionIllegalDataAddress},
		{"write bad mode bits", writePDU(mod, 4), ExceptionIllegalDataValue},
		{"write rate over 100 %", writePDU(out, 10001), ExceptionIllegalDataValue},
		{"write negative rate", writePDU(out, uint16(0xFFFF-9999)), 0}, // −100.00 %
		{"write multi spanning read-only", writePDU(mod, 0, 0), ExceptionIllegalDataAddress},
		{"write multi byte count", append(writePDU(out, 1, 2)[:5], 3, 0, 1, 0), ExceptionIllegalDataValue},
		{"write multi short", writePDU(out, 1, 2)[:8], ExceptionIllegalDataValue},
		{"write multi 124", append([]byte{fcWriteMultiple, 0x9c, 0x40, 0, 124, 248}, make([]byte, 248)...), ExceptionIllegalDataValue},
	} {
		resp, ok := s.Handle(1, tc.pdu)
		if !ok {
			t.Errorf("%s: no response", tc.name)
			continue
		}
		if tc.want == 0 {
			if resp[0] != tc.pdu[0] {
				t.Errorf("%s: response % x, want a normal response", tc.name, resp)
			}
			continue
		}
		if want := []byte{tc.pdu[0] | 0x80, tc.want}; !slices.Equal(resp, want) {
			t.Errorf("%s: response % x, want % x", tc.name, resp, want)
		}
	}
	if st := s.State(); st.Mode != ModeSelfConsumption {
		t.Errorf("refused writes changed mode to %s", st.Mode)
	}
	if _, ok := s.Handle(2, readPDU(fcReadHolding, 40000, 2)); ok {
		t.Error("unit 2 answered, want silence")
	}
	if _, ok := s.Handle(1, nil); ok {
		t.Error("empty PDU answered")
	}
}

func TestExceptionsOverTCP(t *testing.T) {
	t.Parallel()
	_, addr := startSim(t, Config{Now: clocktest.New(noon).Now})
	c := dial(t, addr)
	for _, tc := range []struct {
		pdu  []byte
		want []byte
	}{
		{readPDU(fcReadHolding, 100, 1), []byte{0x83, 0x02}},
		{readPDU(fcReadHolding, 40200, 20), []byte{0x83, 0x02}},
		{readPDU(fcReadHolding, 40000, 0), []byte{0x83, 0x03}},
		{readPDU(fcReadInput, 40000, 200), []byte{0x84, 0x03}},
		{[]byte{0x05, 0, 0, 0xFF, 0}, []byte{0x85, 0x01}},
	} {
		if got := c.call(tc.pdu); !slices.Equal(got, tc.want) {
			t.Errorf("request % x: response % x, want % x", tc.pdu, got, tc.want)
		}
	}
}

func TestWriteLog(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s, addr := startSim(t, Config{Now: clk.Now})
	c := dial(t, addr)
	d := discover(c, 40000)
	c.write(d.addr(124, "OutWRte"), 4000, 0, 0, 30)
	clk.Advance(time.Second)
	c.write(d.addr(124, "StorCtl_Mod"), 2)
	if got := c.call(writePDU(d.addr(124, "StorCtl_Mod"), 9)); !slices.Equal(got, []byte{0x86, 0x03}) {
		t.Fatalf("bad mode write answered % x", got)
	}

	out, mod := d.addr(124, "OutWRte"), d.addr(124, "StorCtl_Mod")
	want := []Write{
		{Time: noon, Unit: 1, Func: fcWriteMultiple, Addr: out, Values: []uint16{4000, 0, 0, 30}},
		{Time: noon.Add(time.Second), Unit: 1, Func: fcWriteSingle, Addr: mod, Values: []uint16{2}},
		{Time: noon.Add(time.Second), Unit: 1, Func: fcWriteSingle, Addr: mod, Values: []uint16{9},
			Exception: ExceptionIllegalDataValue},
	}
	got := s.Writes()
	if !slices.EqualFunc(got, want, func(a, b Write) bool {
		return a.Time.Equal(b.Time) && a.Unit == b.Unit && a.Func == b.Func && a.Addr == b.Addr &&
			slices.Equal(a.Values, b.Values) && a.Exception == b.Exception
	}) {
		t.Errorf("write log\n got %+v\nwant %+v", got, want)
	}
	got[0].Values[0] = 1
	if s.Writes()[0].Values[0] != 4000 {
		t.Error("Writes returned the log's own slices")
	}
	if got := d.value(124, "InOutWRte_RvrtTms"); got != 30 {
		t.Errorf("RvrtTms read back %v, want 30", got)
	}
}

// TestAppendBoundedKeepsTheLatest: the write and read logs keep the
// newest entries, oldest first.
func TestAppendBoundedKeepsTheLatest(t *testing.T) {
	t.Parallel()
	var log []int
	for i := range 10 {
		log = appendBounded(log, i, 3)
	}
	if !slices.Equal(log, []int{7, 8, 9}) {
		t.Fatalf("log %v, want [7 8 9]", log)
	}
}
