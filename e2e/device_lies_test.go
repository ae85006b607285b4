package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// liesConfig is safetyConfig with limits above 1638.35 W, the most OutWRte
// carries at InOutWRte_SF -3, so a 2000 W lease saturates the register.
var liesConfig = strings.NewReplacer("max_discharge_w: 1500", "max_discharge_w: 2500",
	"max_charge_w: 1500", "max_charge_w: 2500").Replace(safetyConfig)

// liarRig is the real agent, as a process, over Modbus TCP against a
// simulator that lies as the test tells it, with a lease seeded before
// the agent starts.
func liarRig(t *testing.T, gw string, lease hearth.Setpoint, lie func(*sim.Simulator)) (*sim.Simulator, *harness.Recorder) {
	t.Helper()
	mq := harness.StartMosquitto(t)
	s, simAddr := startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000, Serial: gw})
	lie(s)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	text := strings.Replace(fmt.Sprintf(liesConfig, dir, simAddr, mq.URL()), "gateway_id: gw-safety", "gateway_id: "+gw, 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	seedLease(t, dir, lease)
	rec := harness.Subscribe(t, mq.URL(), "hearth/v1/"+gw+"/telemetry")
	startAgent(t, cfg)
	return s, rec
}

// rateWrites returns every value written to OutWRte and InWRte, as the
// device's int16 registers, from write index from on, and whether a
// StorCtl_Mod write asked for mode.
func rateWrites(s *sim.Simulator, from int, mode uint16) (out, in []int16, modeWritten bool) {
	outAddr, _ := s.PointAddr(124, "OutWRte")
	inAddr, _ := s.PointAddr(124, "InWRte")
	ctl, _ := s.PointAddr(124, "StorCtl_Mod")
	for _, w := range s.Writes()[from:] {
		if w.Exception != 0 {
			continue
		}
		for i, v := range w.Values {
			switch w.Addr + uint16(i) {
			case outAddr:
				out = append(out, int16(v))
			case inAddr:
				in = append(in, int16(v))
			case ctl:
				modeWritten = modeWritten || v == mode
			}
		}
	}
	return out, in, modeWritten
}

// TestAgentAgainstALyingDevice: a device that says its SoC is 250 %
// (raw 2500 at SoC_SF -1) under a 2000 W discharge lease gets no
// discharge command: the agent publishes soc_pct out_of_range and holds
// the safe state. When the SoC is true again the lease runs, at
// InOutWRte_SF -3, where 2000 W of 5000 W (40000) does not fit OutWRte:
// the rate saturates at 32767 (1638.35 W) and no rate register is ever
// written negative, which the device would run as charging.
func TestAgentAgainstALyingDevice(t *testing.T) {
	t.Parallel()
	const gw = "gw-lies-soc"
	s, rec := liarRig(t, gw, discharge(3, time.Now().UTC(), 10*time.Minute, 2000, hearth.ModeAuto), func(s *sim.Simulator) {
		if err := s.SetRaw(802, "SoC", 2500); err != nil {
			t.Fatal(err)
		}
		if err := s.SetScaleFactor(124, "InOutWRte_SF", -3); err != nil {
			t.Fatal(err)
		}
	})
	rec.WaitFor(t, 30*time.Second, func(m []harness.Message) bool {
		n := 0
		for _, r := range readings(t, m, gw) {
			if r.Points["soc_pct"].Quality == hearth.QualityOutOfRange {
				n++
			}
		}
		return n >= 5 // a second of polls at 200 ms, each published
	})
	if out, _, discharged := rateWrites(s, 0, 2); discharged || len(out) > 0 && maxInt16(out) > 0 {
		t.Fatalf("a device at SoC 250 %% was told to discharge: OutWRte %v, StorCtl_Mod 2 written %v", out, discharged)
	}

	s.ClearRaw()
	waitSim(t, s, "the lease to discharge at the saturated rate", 20*time.Second, func(st sim.State) bool {
		return st.Mode == sim.ModeDischarge && st.BatteryW > 1600
	})
	out, in, _ := rateWrites(s, 0, 2)
	for _, v := range append(out, in...) {
		if v < 0 {
			t.Fatalf("a rate register was written %d: wrapped (OutWRte %v, InWRte %v)", v, out, in)
		}
	}
	if m := maxInt16(out); m != 32767 {
		t.Errorf("largest OutWRte written %d, want 32767 (saturated)", m)
	}
	if st := s.State(); st.BatteryW > 1638.35+1e-6 {
		t.Errorf("the simulator discharges at %v W, above the 1638.35 W the register carries", st.BatteryW)
	}
}

// TestAgentHoldsACellTripWhenTheScaleFactorGoes: a cell over-voltage trip
// under a charge lease holds 0 W; when the device then turns CellV_SF not
// implemented, the cell voltages are unknown, not absent, and the agent
// does not resume charging.
func TestAgentHoldsACellTripWhenTheScaleFactorGoes(t *testing.T) {
	t.Parallel()
	const gw = "gw-lies-cell"
	s, _ := liarRig(t, gw, discharge(4, time.Now().UTC(), 10*time.Minute, -2000, hearth.ModeAuto), func(*sim.Simulator) {})
	waitSim(t, s, "the lease to charge 2000 W", 20*time.Second, func(st sim.State) bool { return st.BatteryW == -2000 })
	s.SetCellV(3.3, 3.8) // above cell_v_max 3.65
	waitSim(t, s, "the cell trip to hold 0 W", 10*time.Second, func(st sim.State) bool { return st.Mode == sim.ModeNet && st.BatteryW == 0 })
	mark := len(s.Writes())
	if err := s.SetRaw(802, "CellV_SF", 0x8000); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // ten polls
	if _, in, charged := rateWrites(s, mark, 1); charged || maxInt16(in) > 0 {
		t.Errorf("charging resumed with the cell voltages unknown: InWRte %v, StorCtl_Mod 1 written %v", in, charged)
	}
}

func maxInt16(vs []int16) int16 {
	var m int16
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}
