package e2e

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
)

// TestAgentScaleFactorChangeUnderLease: the real agent holds a 1500 W
// discharge lease at InOutWRte_SF 0 (OutWRte 30: 30 % of 5000 W); the
// device's InOutWRte_SF then turns 1, so the 30 it holds means 300 %. The
// agent's next write reads the scale factor first and writes 3 (30 % at
// 10^1): no rate at the old scale is ever sent after the change (before,
// the first refresh sent 30 again and only the next one 3), and the
// battery is back at 1500 W.
func TestAgentScaleFactorChangeUnderLease(t *testing.T) {
	t.Parallel()
	const gw = "gw-sf-change"
	s, _ := liarRig(t, gw, discharge(3, time.Now().UTC(), 10*time.Minute, 1500, hearth.ModeAuto), func(s *sim.Simulator) {
		if err := s.SetScaleFactor(124, "InOutWRte_SF", 0); err != nil {
			t.Fatal(err)
		}
	})
	waitSim(t, s, "the lease to discharge 1500 W", 20*time.Second, func(st sim.State) bool {
		return st.Mode == sim.ModeDischarge && st.BatteryW == 1500
	})
	if out, _, _ := rateWrites(s, 0, 2); len(out) == 0 || out[len(out)-1] != 30 {
		t.Fatalf("OutWRte written %v, want 30 (30 %% at InOutWRte_SF 0) last", out)
	}
	mark := len(s.Writes())
	if err := s.SetScaleFactor(124, "InOutWRte_SF", 1); err != nil {
		t.Fatal(err)
	}
	// Every OutWRte sent, refused or not: the simulator refuses 300 %
	// with exception 3, a device that does not check its range runs it.
	sent := func() []int16 {
		at, _ := s.PointAddr(124, "OutWRte")
		var out []int16
		for _, w := range s.Writes()[mark:] {
			if at >= w.Addr && int(at) < int(w.Addr)+len(w.Values) {
				out = append(out, int16(w.Values[at-w.Addr]))
			}
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	var out []int16
	for time.Now().Before(deadline) {
		if out = sent(); len(out) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(out) == 0 || out[0] != 3 {
		t.Fatalf("OutWRte sent after InOutWRte_SF turned 1: %v, want 3 first (30 at the new scale is 300 %%)", out)
	}
	waitSim(t, s, "the battery back at 1500 W", 10*time.Second, func(st sim.State) bool {
		return st.Mode == sim.ModeDischarge && st.BatteryW == 1500
	})
	for _, v := range sent() {
		if v != 3 {
			t.Errorf("OutWRte sent after the change: %v, want only 3", sent())
			break
		}
	}
}
