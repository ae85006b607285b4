package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestDeviceRefusingARegisterStaysUp runs the real agent against a
// device that refuses one register hearth does not need (model 103 TmpOt,
// exception 2), inside the read that carries the temperatures. The agent
// learns the refused registers and polls around them: temp_c arrives good,
// the device is up, no read is refused after learning, the device is not
// rediscovered, and a 1500 W lease runs at 1500 W. After a restart the
// agent knows the hole already: not one refused read.
func TestDeviceRefusingARegisterStaysUp(t *testing.T) {
	t.Parallel()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mq := startBroker(t)
	s, simAddr := startSim(t, sim.Config{InitialSoC: 60, MaxChargeW: 5000, MaxDischargeW: 5000, Serial: "E2EHOLE"})
	if err := s.Refuse(103, "TmpOt"); err != nil {
		t.Fatal(err)
	}
	tmpOt, _ := s.PointAddr(103, "TmpOt")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(setpointConfig, dir, simAddr, mq.URL(), base64.StdEncoding.EncodeToString(pub))), 0o600); err != nil {
		t.Fatal(err)
	}
	const base = "hearth/v1/gw-sp"
	rec := subscribe(t, mq.URL(), base+"/#")
	a := startAgent(t, cfg)
	rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool {
		rs := readings(t, m, "gw-sp")
		return len(rs) > 0 && rs[len(rs)-1].Points["temp_c"].Good()
	})

	// From here on, ten seconds of polling at 200 ms.
	mark := len(s.Reads())
	harness.Publish(t, mq.URL(), base+"/setpoint", sign(t, lease(1, time.Now(), time.Now().Add(time.Hour), "power", 1500), "ops-1", key), false)
	waitSim(t, s, "the 1500 W lease to run", 15*time.Second, func(st sim.State) bool { return st.BatteryW == 1500 })
	time.Sleep(10 * time.Second)
	later := s.Reads()[mark:]
	refused, rediscovered := 0, 0
	for _, r := range later {
		if r.Exception != 0 {
			refused++
		}
		if r.Addr == 40000 {
			rediscovered++
		}
		if tmpOt >= r.Addr && int(tmpOt) < int(r.Addr)+int(r.Count) {
			t.Errorf("a read %d+%d after learning covers the refused TmpOt (%d)", r.Addr, r.Count, tmpOt)
			break
		}
	}
	t.Logf("%d reads in the window after learning (%d refused, %d discoveries)", len(later), refused, rediscovered)
	if refused != 0 || rediscovered != 0 {
		t.Errorf("after learning: %d refused reads and %d rediscoveries, want none", refused, rediscovered)
	}
	if st := s.State(); st.BatteryW != 1500 {
		t.Errorf("the lease runs at %v W, want 1500", st.BatteryW)
	}
	rs := readings(t, rec.Messages(), "gw-sp")
	if last := rs[len(rs)-1]; !last.Points["temp_c"].Good() {
		t.Errorf("last reading: temp_c %+v, want a value", last.Points["temp_c"])
	}
	out, errOut, code := runBinary(t, nil, hearthBin, "status", "--json", "--socket", filepath.Join(dir, "hearth.sock"))
	var st struct {
		Devices []struct {
			Name string `json:"name"`
			Up   bool   `json:"up"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Devices) != 1 || !st.Devices[0].Up {
		t.Errorf("hearth status (exit %d): the device is not up: %v\n%s%s", code, err, out, errOut)
	}

	// A restart knows the hole already.
	if _, err := a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	mark = len(s.Reads())
	n := len(rec.Messages())
	a.Restart()
	rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool { return len(readings(t, m[n:], "gw-sp")) >= 5 })
	for _, r := range s.Reads()[mark:] {
		if r.Exception != 0 {
			t.Errorf("after the restart a read %d+%d was refused: the hole was learned again", r.Addr, r.Count)
		}
	}
}
