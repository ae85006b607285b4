package drivers

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/drivers/sunspec"
)

// night is a winter night: no PV, so the simulator's own logic is quiet.
var night = time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)

// simDevice serves a simulator over Modbus TCP and returns a SunSpec
// device polling it.
func simDevice(t *testing.T, cfg sim.Config, opts ...SunSpecOption) (*sim.Simulator, *SunSpecDevice) {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return night }
	}
	s := sim.New(cfg)
	b := openBus(t, serveSims(t, TransportTCP, s))
	return s, NewSunSpecDevice("battery", b, 1, opts...)
}

func poll(t *testing.T, d interface {
	Poll(context.Context, func() time.Time) (hearth.Reading, error)
}) hearth.Reading {
	t.Helper()
	r, err := d.Poll(context.Background(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantPoint checks a point: a value within 1e-9 (relative), or a quality.
func wantPoint(t *testing.T, r hearth.Reading, name string, want any) {
	t.Helper()
	p, ok := r.Points[name]
	switch w := want.(type) {
	case hearth.Quality:
		if !ok || p.Quality != w {
			t.Errorf("%s = %+v (present %v), want quality %s", name, p, ok, w)
		}
	case float64:
		if !ok || !p.Good() || math.Abs(p.Value-w) > 1e-9*math.Max(1, math.Abs(w)) {
			t.Errorf("%s = %+v (present %v), want %g", name, p, ok, w)
		}
	}
}

// TestSunSpecPhysicalRanges serves a simulator whose registers lie, one
// at a time, and checks each lie comes out out_of_range with no value,
// while the values around it stay good.
func TestSunSpecPhysicalRanges(t *testing.T) {
	t.Parallel()
	s, d := simDevice(t, sim.Config{InitialSoC: 60, MaxChargeW: 3000, MaxDischargeW: 3000})
	r := poll(t, d)
	wantPoint(t, r, "soc_pct", 60.0)
	tellLies(t, s, d, []lie{
		{802, "SoC", 2500, "soc_pct", hearth.QualityOutOfRange, ""},         // 250 % at SoC_SF -1
		{802, "SoC", 1000, "soc_pct", 100.0, ""},                            // 100 %: the bound is in range
		{802, "SoH", 101, "soh_pct", hearth.QualityOutOfRange, ""},          // SoH_SF 0
		{802, "CellVMax", 5200, "cell_v_max", hearth.QualityOutOfRange, ""}, // 5.2 V at CellV_SF -3
		{802, "CellVMin", 1200, "cell_v_min", hearth.QualityOutOfRange, ""}, // 1.2 V
		{802, "CellVMin", 2800, "cell_v_min", 2.8, ""},
		{103, "TmpCab", 1500, "temp_c", hearth.QualityOutOfRange, ""}, // 150.0 °C at Tmp_SF -1
		{103, "TmpCab", -450, "temp_c", hearth.QualityOutOfRange, ""}, // -45.0 °C
		{103, "TmpCab", -395, "temp_c", -39.5, ""},                    // cold, but a real winter
		{802, "W", 6500, "power_w", hearth.QualityOutOfRange, ""},     // above 2× the 3000 W rating (802, 124)
		{802, "W", -6000, "power_w", -6000.0, ""},                     // at 2× the rating: in range
		{103, "W_SF", 4, "ac_power_w", hearth.QualityOutOfRange, ""},  // 300 W of AC at 10^4: megawatts
	})
	wantPoint(t, poll(t, d), "soc_pct", 60.0)
}

// TestSunSpecLostPoint: a point that has given values and then reads as
// not implemented (its scale factor turned to the sentinel, seen at the
// next static refresh) is comm_error, so a safety rule that needs it
// cannot go unchecked; a point that was never implemented stays
// not_implemented.
func TestSunSpecLostPoint(t *testing.T) {
	t.Parallel()
	s, d := simDevice(t, sim.Config{InitialSoC: 60})
	clock := night
	at := func() time.Time { return clock }
	pollAt := func() hearth.Reading {
		t.Helper()
		r, err := d.Poll(context.Background(), at)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := pollAt()
	if !r.Points["cell_v_max"].Good() || r.Points["temp_sink_c"].Quality != hearth.QualityNotImplemented {
		t.Fatalf("before: cell_v_max %+v, temp_sink_c %+v", r.Points["cell_v_max"], r.Points["temp_sink_c"])
	}
	if err := s.SetRaw(802, "CellV_SF", 0x8000); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(StaticRefresh)
	r = pollAt()
	wantPoint(t, r, "cell_v_max", hearth.QualityCommError)
	wantPoint(t, r, "cell_v_min", hearth.QualityCommError)
	wantPoint(t, r, "temp_sink_c", hearth.QualityNotImplemented)
	s.ClearRaw()
	clock = clock.Add(StaticRefresh)
	if r := pollAt(); !r.Points["cell_v_max"].Good() {
		t.Errorf("after the scale factor came back: cell_v_max %+v", r.Points["cell_v_max"])
	}
}

// TestProfilePhysicalRanges: a profile device's points get the built-in
// ranges by name (a signed SoC of -30 % is out of range), a profile's own
// range overrides them, rating_w bounds power, and a lost point is
// comm_error.
func TestProfilePhysicalRanges(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{InitialSoC: 60, Now: func() time.Time { return night }})
	at := func(point string) uint16 { a, _ := s.PointAddr(802, point); return a }
	src := []byte(`name: signed
rating_w: 2000
points:
  - {name: soc_pct, address: ` + itoa(at("SoC")) + `, type: s16, sf: soc_sf}
  - {name: soc_sf, address: ` + itoa(at("SoC_SF")) + `, type: sunssf}
  - {name: soh_pct, address: ` + itoa(at("SoH")) + `, type: u16, range: [80, 100]}
  - {name: power_w, address: ` + itoa(at("W")) + `, type: s16}
  - {name: cell_v_max, address: ` + itoa(at("CellVMax")) + `, type: u16, sf: cell_sf}
  - {name: cell_sf, address: ` + itoa(at("CellV_SF")) + `, type: sunssf}
`)
	p, err := ParseProfile("signed.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	d := NewProfileDevice("battery", openBus(t, serveSims(t, TransportTCP, s)), 1, p)
	r := poll(t, d)
	wantPoint(t, r, "soc_pct", 60.0)
	wantPoint(t, r, "soh_pct", 100.0)
	tellLies(t, s, d, []lie{
		{802, "SoC", -300, "soc_pct", hearth.QualityOutOfRange, ""}, // -30.0 %
		{802, "SoC", 2500, "soc_pct", hearth.QualityOutOfRange, ""}, // 250.0 %
		{802, "SoH", 79, "soh_pct", hearth.QualityOutOfRange, ""},   // below the profile's own range
		{802, "SoH", 80, "soh_pct", 80.0, ""},
		{802, "W", 4001, "power_w", hearth.QualityOutOfRange, ""}, // above 2× rating_w
		{802, "W", -4000, "power_w", -4000.0, ""},
		{802, "CellV_SF", 0x8000, "cell_v_max", hearth.QualityCommError, "cell_v_min"}, // it had a value: lost, not absent
	})
}

// TestGridPowerIsNotBoundByTheInverter: a hybrid inverter's grid point
// reads the house connection, which the inverter's rating does not bound
// (a 10 kW inverter on a 3×32 A connection sees 22 kW of draw): it is
// judged against the fixed power bound, the battery's power against the
// rating.
func TestGridPowerIsNotBoundByTheInverter(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{InitialSoC: 60, Now: func() time.Time { return night }})
	at := func(point string) uint16 { a, _ := s.PointAddr(802, point); return a }
	src := []byte(`name: hybrid
rating_w: 2000
points:
  - {name: soc_pct, address: ` + itoa(at("SoC")) + `, type: u16, sf: soc_sf}
  - {name: soc_sf, address: ` + itoa(at("SoC_SF")) + `, type: sunssf}
  - {name: grid_power_w, address: ` + itoa(at("W")) + `, type: s16}
`)
	p, err := ParseProfile("hybrid.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	d := NewProfileDevice("inverter", openBus(t, serveSims(t, TransportTCP, s)), 1, p)
	tellLies(t, s, d, []lie{
		{802, "W", -22000, "grid_power_w", -22000.0, ""}, // 22 kW drawn, 11× the rating
		{802, "W", 30000, "grid_power_w", 30000.0, ""},
	})
	for _, name := range []string{"grid_power_w", "sma_grid_draw_w", "ae_grid_import_w", "meter_power_w"} {
		if r, ok := hearth.PhysicalRange(name, 2000); !ok || !r.Contains(22000) || r.Contains(2e6) {
			t.Errorf("%s on a 2 kW inverter: range %+v, want the fixed bound (22 kW in, 2 MW out)", name, r)
		}
	}
	if r, _ := hearth.PhysicalRange("power_w", 2000); r.Contains(4001) {
		t.Errorf("the battery's power_w on a 2 kW inverter: range %+v, want ±4 kW", r)
	}
}

// lie is a raw value a simulator serves in place of a point's registers,
// and what the device must make of it.
type lie struct {
	model uint16
	point string
	raw   int64
	name  string
	want  any    // a value, or a quality
	also  string // another point the lie spoils (one sharing the scale factor)
}

// tellLies serves each lie alone and checks the point d reads, and that
// the rest of the reading stays good.
func tellLies(t *testing.T, s *sim.Simulator, d interface {
	Poll(context.Context, func() time.Time) (hearth.Reading, error)
}, lies []lie) {
	t.Helper()
	for _, l := range lies {
		if err := s.SetRaw(l.model, l.point, l.raw); err != nil {
			t.Fatal(err)
		}
		r := poll(t, d)
		wantPoint(t, r, l.name, l.want)
		for name, p := range r.Points {
			if name != l.name && name != l.also && !p.Good() && p.Quality != hearth.QualityNotImplemented {
				t.Errorf("%d.%s = %d: %s %+v, want the rest of the reading good", l.model, l.point, l.raw, name, p)
			}
		}
		s.ClearRaw()
	}
}

func itoa(v uint16) string { return strconv.Itoa(int(v)) }

// TestSunSpecInverterRating: AC power is judged against the inverter's
// own rating (model 120 WRtg, model 121 WMax), the larger of the two.
func TestSunSpecInverterRating(t *testing.T) {
	t.Parallel()
	neg := func(v int16) uint16 { return uint16(v) }
	device := func(acW int16) *SunSpecDevice {
		image := map[uint16]uint16{40000: 0x5375, 40001: 0x6e53}
		a := putModel(image, 40002, 1, 66, map[uint16]uint16{})
		a = putModel(image, a, 120, sunspec.Lookup(120).FixedLen, map[uint16]uint16{
			off(120, "WRtg"): 300, off(120, "WRtg_SF"): 1, // 3000 W
		})
		a = putModel(image, a, 121, sunspec.Lookup(121).FixedLen, map[uint16]uint16{
			off(121, "WMax"): 40, off(121, "WMax_SF"): 2, // 4000 W
		})
		a = putModel(image, a, 101, 50, map[uint16]uint16{
			off(101, "W"): neg(acW), off(101, "W_SF"): 0,
			off(101, "DCW"): 8100, off(101, "DCW_SF"): 0,
		})
		image[a], image[a+1] = 0xFFFF, 0
		f, _ := imageServer(t, image)
		return NewSunSpecDevice("pv", openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: time.Second}), 1)
	}
	r := poll(t, device(-8000))
	wantPoint(t, r, "ac_power_w", -8000.0)                  // 2× 4000 W: in range
	wantPoint(t, r, "dc_power_w", hearth.QualityOutOfRange) // 8100 W: beyond 2× 4000 W
	wantPoint(t, poll(t, device(8001)), "ac_power_w", hearth.QualityOutOfRange)
}

// TestSunSpecMeter: a SunSpec meter's total real power (model 203 W,
// positive importing on the simulator as on a utility meter) arrives as
// grid_power_w in hearth's sign, positive exporting; a meter that signs
// the other way round needs its profile's meter_sign.
func TestSunSpecMeter(t *testing.T) {
	t.Parallel()
	exportPositive := &Profile{Name: "solar", Discovery: "sunspec", MeterSign: MeterExportPositive}
	for _, tc := range []struct {
		name       string
		simExport  bool
		opts       []SunSpecOption
		wantExport bool // grid_power_w reads the simulator's export as positive
	}{
		{"import positive", false, nil, true},
		{"export positive with its profile", true, []SunSpecOption{WithProfile(exportPositive)}, true},
		{"export positive without its profile", true, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, d := simDevice(t, sim.Config{Meter: true, MeterExportPositive: tc.simExport, InitialSoC: 100,
				Now: func() time.Time { return noon }}, tc.opts...)
			// A full battery at noon: PV the house does not use is exported.
			s.SetPV(3000)
			s.SetLoad(500)
			r := poll(t, d)
			grid := float64(s.State().GridW)
			if grid < 2000 {
				t.Fatalf("simulator exports %v W, want about 2500", grid)
			}
			if !tc.wantExport {
				grid = -grid
			}
			wantPoint(t, r, GridPowerPoint, grid)
			for _, n := range []string{"grid_import_wh", "grid_export_wh"} {
				if p := r.Points[n]; !p.Good() || p.Value < 1000 {
					t.Errorf("%s = %+v, want the meter's counter (from 1000 Wh)", n, p)
				}
			}
		})
	}
	// Without a meter model the device gives no grid power at all.
	_, d := simDevice(t, sim.Config{})
	if p, ok := poll(t, d).Points[GridPowerPoint]; ok {
		t.Errorf("a device without a meter model reports %s %+v", GridPowerPoint, p)
	}
}

// TestSunSpecCellTemperatures: model 803's module extremes arrive as
// cell_temp_c_min and cell_temp_c_max, and out of range when they lie.
func TestSunSpecCellTemperatures(t *testing.T) {
	t.Parallel()
	s, d := simDevice(t, sim.Config{CellTemps: true})
	s.SetCellTemp(-4.5, 12.5)
	r := poll(t, d)
	wantPoint(t, r, "cell_temp_c_min", -4.5)
	wantPoint(t, r, "cell_temp_c_max", 12.5)
	s.SetCellTemp(-45, 12.5)
	wantPoint(t, poll(t, d), "cell_temp_c_min", hearth.QualityOutOfRange)
}

// TestSunSpecModuleTemperatures: without a bank model, the cell
// temperatures of every module (model 805, one instance per module) are
// combined: the lowest minimum, the highest maximum; a module that reads
// out of range makes the combined point out of range.
func TestSunSpecModuleTemperatures(t *testing.T) {
	t.Parallel()
	neg := func(v int16) uint16 { return uint16(v) }
	device := func(temps [][2]int16) *SunSpecDevice {
		image := map[uint16]uint16{40000: 0x5375, 40001: 0x6e53}
		a := putModel(image, 40002, 1, 66, map[uint16]uint16{})
		for i, tc := range temps {
			a = putModel(image, a, 805, sunspec.Lookup(805).FixedLen, map[uint16]uint16{
				off(805, "ModIdx"): uint16(i), off(805, "Tmp_SF"): neg(-1),
				off(805, "CellTmpMin"): neg(tc[0]), off(805, "CellTmpMax"): neg(tc[1]),
			})
		}
		image[a], image[a+1] = 0xFFFF, 0
		f, _ := imageServer(t, image)
		return NewSunSpecDevice("battery", openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: time.Second}), 1)
	}
	r := poll(t, device([][2]int16{{31, 182}, {-22, 95}, {40, 201}}))
	wantPoint(t, r, "cell_temp_c_min", -2.2)
	wantPoint(t, r, "cell_temp_c_max", 20.1)
	r = poll(t, device([][2]int16{{31, 182}, {-22, 1300}, {40, 201}})) // 130 °C in the second module
	wantPoint(t, r, "cell_temp_c_max", hearth.QualityOutOfRange)
	wantPoint(t, r, "cell_temp_c_min", -2.2)
}
