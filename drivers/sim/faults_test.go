package sim

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sunspec"
	"github.com/hearth-energy/hearth/internal/clocktest"
)

// TestOptionalModels: models 803 and 203 follow model 802 when asked for,
// so the base chain's addresses do not move; 803 carries one string.
func TestOptionalModels(t *testing.T) {
	t.Parallel()
	_, addr := startSim(t, Config{CellTemps: true, Meter: true, Now: clocktest.New(noon).Now})
	got := walk(dial(t, addr), 40000)
	l803 := sunspec.Lookup(803).FixedLen + sunspec.Lookup(803).RepeatLen
	want := []model{
		{id: 1, len: sunspec.Lookup(1).FixedLen, addr: 40002},
		{id: 103, len: sunspec.Lookup(103).FixedLen, addr: 40070},
		{id: 124, len: sunspec.Lookup(124).FixedLen, addr: 40122},
		{id: 802, len: sunspec.Lookup(802).FixedLen, addr: 40148},
		{id: 803, len: l803, addr: 40212},
		{id: 203, len: sunspec.Lookup(203).FixedLen, addr: 40214 + l803},
		{id: 0xFFFF, len: 0, addr: 40214 + l803 + 2 + sunspec.Lookup(203).FixedLen},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("model chain\n got %+v\nwant %+v", got, want)
	}
}

// TestMeterModel: model 203's W is the grid connection's power, positive
// importing (or exporting, as configured), and its counters integrate it.
func TestMeterModel(t *testing.T) {
	t.Parallel()
	for _, exportPositive := range []bool{false, true} {
		clk := clocktest.New(noon)
		s, addr := startSim(t, Config{Meter: true, MeterExportPositive: exportPositive, InitialSoC: 100, Now: clk.Now})
		s.SetPV(3000)
		s.SetLoad(500) // a full battery: 2500 W exported
		d := discover(dial(t, addr), 40000)
		want := -2500.0
		if exportPositive {
			want = 2500
		}
		if w := d.value(203, "W"); w != want {
			t.Errorf("export positive %v: 203 W = %v, want %v", exportPositive, w, want)
		}
		if st := s.State(); st.GridW != 2500 {
			t.Errorf("State().GridW = %v, want 2500", st.GridW)
		}
		exp0, imp0 := d.value(203, "TotWhExp"), d.value(203, "TotWhImp")
		clk.Advance(time.Hour)
		if exp, imp := d.value(203, "TotWhExp"), d.value(203, "TotWhImp"); !near(exp-exp0, 2500, 2) || imp != imp0 {
			t.Errorf("an hour exporting 2500 W: exported %v → %v Wh, imported %v → %v Wh", exp0, exp, imp0, imp)
		}
	}
}

// TestBankModel: model 803's module temperatures follow the enclosure, or
// the pinned values.
func TestBankModel(t *testing.T) {
	t.Parallel()
	s, addr := startSim(t, Config{CellTemps: true, AmbientC: 20, Now: clocktest.New(night).Now})
	d := discover(dial(t, addr), 40000)
	if lo, hi := d.value(803, "ModTmpMin"), d.value(803, "ModTmpMax"); lo != 19.5 || hi != 20.5 {
		t.Errorf("module temperatures %v..%v °C, want 19.5..20.5 at 20 °C ambient", lo, hi)
	}
	s.SetCellTemp(-3, 7.5)
	if lo, hi := d.value(803, "ModTmpMin"), d.value(803, "ModTmpMax"); lo != -3 || hi != 7.5 {
		t.Errorf("pinned module temperatures read %v..%v °C, want -3..7.5", lo, hi)
	}
}

// TestRawOverride: SetRaw serves a value in place of the true registers,
// one or more registers wide, while the simulation follows the true
// value; ClearRaw ends it.
func TestRawOverride(t *testing.T) {
	t.Parallel()
	s, addr := startSim(t, Config{InitialSoC: 60, Now: clocktest.New(night).Now})
	d := discover(dial(t, addr), 40000)
	if err := s.SetRaw(802, "SoC", 2500); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRaw(802, "CellV_SF", 0x8000); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRaw(103, "WH", 0x12345678); err != nil {
		t.Fatal(err)
	}
	if got := d.value(802, "SoC"); got != 250 {
		t.Errorf("served SoC %v, want 250", got)
	}
	if r := d.regs(802, "CellV_SF"); r[0] != 0x8000 {
		t.Errorf("served CellV_SF %04x, want 8000", r[0])
	}
	if r := d.regs(103, "WH"); r[0] != 0x1234 || r[1] != 0x5678 {
		t.Errorf("served WH %04x, want 1234 5678", r)
	}
	if soc := s.State().SoCPct; soc != 60 {
		t.Errorf("the simulation's SoC is %v, want 60: SetRaw changes what is served only", soc)
	}
	s.ClearRaw()
	if got := d.value(802, "SoC"); got != 60 {
		t.Errorf("after ClearRaw: SoC %v, want 60", got)
	}
	for _, tc := range []struct {
		model uint16
		point string
		v     int64
	}{{802, "NoSuch", 1}, {802, "SoC", 65536}, {802, "SoC", -32769}, {103, "WH", 1 << 32}} {
		if err := s.SetRaw(tc.model, tc.point, tc.v); err == nil {
			t.Errorf("SetRaw(%d, %s, %d) accepted", tc.model, tc.point, tc.v)
		}
	}
}

// TestRateScaleFactor: with InOutWRte_SF -3 the simulator accepts any
// int16 rate (100 % would be 100000) and interprets it at -3; a rate
// that wrapped negative makes it charge, and the write log shows it.
func TestRateScaleFactor(t *testing.T) {
	t.Parallel()
	s, addr := startSim(t, Config{InitialSoC: 60, Now: clocktest.New(night).Now})
	c := dial(t, addr)
	d := discover(c, 40000)
	if err := s.SetScaleFactor(124, "InOutWRte_SF", -3); err != nil {
		t.Fatal(err)
	}
	c.write(d.addr(124, "OutWRte"), 32767)
	c.write(d.addr(124, "StorCtl_Mod"), 2)
	if b := s.State().BatteryW; !near(float64(b), 1638.35, 1e-6) {
		t.Errorf("32767 at -3 of 5000 W: battery %v W, want 1638.35", b)
	}
	wrapped := uint16(0x9C40) // 40000, or int16 -25536
	c.write(d.addr(124, "OutWRte"), wrapped)
	if b := s.State().BatteryW; b >= 0 {
		t.Errorf("OutWRte -25536 with DISCHARGE: battery %v W, want charging", b)
	}
	ws := s.Writes()
	if last := ws[len(ws)-1]; last.Values[0] != wrapped || last.Exception != 0 {
		t.Errorf("write log's last entry %+v, want %04x accepted", last, wrapped)
	}
	resp := c.call(writePDU(d.addr(124, "OutWRte"), 0x8000)) // -32768: beyond -100 % of int16
	if len(resp) != 2 || resp[1] != ExceptionIllegalDataValue {
		t.Errorf("OutWRte -32768: response % x, want exception 3", resp)
	}
	for _, tc := range []struct {
		model uint16
		point string
		sf    int16
	}{{124, "InOutWRte_SF", 11}, {124, "InOutWRte_SF", -11}, {802, "SoC", -1}} {
		if err := s.SetScaleFactor(tc.model, tc.point, tc.sf); err == nil {
			t.Errorf("SetScaleFactor(%d, %s, %d) accepted", tc.model, tc.point, tc.sf)
		}
	}
}

// TestControlFaultKnobs drives the knobs through the control protocol.
func TestControlFaultKnobs(t *testing.T) {
	t.Parallel()
	s := New(Config{UnitID: 1, CellTemps: true, Now: clocktest.New(night).Now})
	in := strings.NewReader(strings.Join([]string{
		"raw 802 SoC 2500", "raw 802 CellV_SF 0x8000", "sf 124 InOutWRte_SF -3", "cellv 3.1 3.8",
		"celltemp -5 10", "writes 1", "raw clear", "raw 802 NoSuch 1", "sf 124 InOutWRte_SF 12", "cellv 3",
		"raw 802 SoC", "writes x",
	}, "\n"))
	var out bytes.Buffer
	if err := ServeControl(in, &out, s); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"ok", "ok", "ok", "ok", "ok", `{"1":[]}`, "ok", "error", "error", "error", "error", "error"}
	if len(lines) != len(want) {
		t.Fatalf("answers:\n%s", out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("answer %d: %q, want %q…", i, lines[i], w)
		}
	}
	if sf := int16(s.reg(124, "InOutWRte_SF")[0]); sf != -3 {
		t.Errorf("InOutWRte_SF %d, want -3", sf)
	}
	st := s.State()
	if st.CellVMin != 3.1 || st.CellVMax != 3.8 {
		t.Errorf("cell voltages %v..%v, want 3.1..3.8", st.CellVMin, st.CellVMax)
	}
	if lo, hi := s.get(803, "ModTmpMin"), s.get(803, "ModTmpMax"); lo != -5 || hi != 10 {
		t.Errorf("module temperatures %v..%v, want -5..10", lo, hi)
	}
	if len(s.raw) != 0 {
		t.Errorf("raw clear left %v", s.raw)
	}

	// writes N lists the latest writes with their values.
	s.Handle(1, writePDU(s.lay.points[key{124, "OutWRte"}].addr, 0x9C40))
	out.Reset()
	ServeControl(strings.NewReader("writes 1\n"), &out, s)
	var got map[string][]Write
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got["1"]) != 1 || got["1"][0].Values[0] != 0x9C40 {
		t.Errorf("writes 1: %s (%v), want the OutWRte write of 9c40", out.String(), err)
	}
}

// night is a winter night: no PV.
var night = time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)
