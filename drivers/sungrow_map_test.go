package drivers

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// sungrowImage is a Sungrow SH input-register image transcribed from the
// public maps, not from hearth's profile: wire address (the document's
// "reg" minus one) → value, 32-bit values low word first. Sources:
// Sungrow protocol V1.0.20, mkaiser modbus_sungrow.yaml (wire address and
// "reg N" comment per point), evcc sungrow-hybrid.yaml. The battery is
// charging at 1234 W (power-flow bit 1), importing 734 W, SoC 65.5 %.
var sungrowImage = map[uint16]uint16{
	5000: 100,           // nominal output power 10.0 kW (0.1 kW)
	5003: 4660, 5004: 1, // total output energy 70196 × 0.1 kWh
	5016: 2500, 5017: 0, // total DC power 2500 W
	5018: 2301, 5019: 2299, // phase A, B voltage (0.1 V)
	5020:  2302,                  // phase C voltage
	5034:  990,                   // power factor 0.990
	5035:  500,                   // grid frequency 50.0 Hz
	12999: 0x0040,                // system state: running
	13000: 0b100011,              // power flow: PV, battery charging, importing
	13009: 0xFD22, 13010: 0xFFFF, // export power −734 W (importing)
	13020: 0xFFD1,        // battery current −4.7 A
	13021: 1234,          // battery power magnitude 1234 W
	13022: 655,           // battery level 65.5 %
	13026: 321, 13027: 0, // total battery discharge 32.1 kWh
	13033: 1266, 13034: 0, // total active power 1266 W
	13036: 5000, 13037: 0, // total import energy 500.0 kWh
	13040: 400, 13041: 0, // total battery charge 40.0 kWh
	13045: 9000, 13046: 0, // total export energy 900.0 kWh
}

// TestSungrowMapMatchesPublicSources reads the sungrow_sh profile against
// the transcribed image: every point decodes to the value the public maps
// give it, in hearth's signs (battery positive discharging, grid positive
// exporting).
func TestSungrowMapMatchesPublicSources(t *testing.T) {
	t.Parallel()
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			addr, n := binary.BigEndian.Uint16(req.pdu[1:]), binary.BigEndian.Uint16(req.pdu[3:])
			resp := []byte{req.pdu[0], byte(2 * n)}
			if req.pdu[0] != 0x04 {
				resp = []byte{req.pdu[0] | 0x80, 2}
			}
			for i := range n {
				if req.pdu[0] == 0x04 {
					resp = binary.BigEndian.AppendUint16(resp, sungrowImage[addr+i])
				}
			}
			if _, err := c.Write(mbapFrame(req.tid, req.unit, resp)); err != nil {
				return
			}
		}
	})
	bus, err := OpenBus(LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	p, err := EmbeddedProfile("sungrow_sh")
	if err != nil {
		t.Fatal(err)
	}
	// Only the read points: the control points are holding registers.
	var read []PointSpec
	for _, pt := range p.Points {
		if pt.Table == Input {
			read = append(read, pt)
		}
	}
	p.Points = read
	d := NewProfileDevice("inverter", bus, 1, p)
	r, err := d.Poll(context.Background(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"nominal_power_w": 10000, "ac_energy_wh": 7019600, "dc_power_w": 2500,
		"ac_v_a": 230.1, "ac_v_b": 229.9, "ac_v_c": 230.2, "power_factor": 0.99, "ac_hz": 50,
		"system_state": 0x0040, "power_flow": 0b100011,
		"grid_power_w": -734, "battery_current_a": -4.7, "power_w": -1234, "soc_pct": 65.5,
		"battery_discharged_wh": 32100, "ac_power_w": 1266, "grid_import_wh": 500000,
		"battery_charged_wh": 40000, "grid_export_wh": 900000,
	}
	for name, w := range want {
		got, ok := r.Points[name]
		if !ok || !got.Good() || !near(got.Value, w) {
			t.Errorf("%s = %+v, want %g", name, got, w)
		}
	}
	for name := range r.Points {
		if _, ok := want[name]; !ok {
			t.Errorf("point %s is not pinned by the image", name)
		}
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-6 && d > -1e-6 }
