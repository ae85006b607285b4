package drivers

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// smaImage is an SMA register image (FC 03) transcribed from SMA's own
// documents, not from hearth's profile: SMA_Modbus-TI-en-28, sheet
// SBS2.5-1VL-40, and SMA_Modbus-TI-en-15 (32-bit values high word first;
// NaN 0xFFFFFFFF for U32, 0x80000000 for S32). The battery is charging at
// 1234 W (31393, the charge power; 31395, the discharge power, is 0),
// the house draws 734 W from the grid (30865; the feed-in 30867 is 0),
// SoC 65 %. evcc's sma-hybrid reads the same registers: battery power
// 31395 − 31393, grid 30865 − 30867 (import positive).
var smaImage = map[uint16]uint16{
	30845: 0, 30846: 65, // Bat.ChaStt, U32 %
	30865: 0, 30866: 734, // Metering.GridMs.TotWIn, power drawn, S32 W
	30867: 0, 30868: 0, // Metering.GridMs.TotWOut, power fed in, S32 W
	31393: 0, 31394: 1234, // BatChrg.CurBatCha, U32 W
	31395: 0, 31396: 0, // BatDsch.CurBatDsch, U32 W
}

// serveImage answers FC 03 from image (registers it lacks read 0xFFFF,
// SMA's NaN) and records the registers each read asked for.
func serveImage(t *testing.T, image map[uint16]uint16, asked *[][2]uint16, mu *sync.Mutex) string {
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			addr, n := binary.BigEndian.Uint16(req.pdu[1:]), binary.BigEndian.Uint16(req.pdu[3:])
			mu.Lock()
			*asked = append(*asked, [2]uint16{addr, n})
			mu.Unlock()
			resp := []byte{req.pdu[0], byte(2 * n)}
			if req.pdu[0] != 0x03 {
				resp = []byte{req.pdu[0] | 0x80, 1}
			}
			for i := range n {
				if req.pdu[0] == 0x03 {
					x, ok := image[addr+i]
					if !ok {
						x = 0xFFFF
					}
					resp = binary.BigEndian.AppendUint16(resp, x)
				}
			}
			if _, err := c.Write(mbapFrame(req.tid, req.unit, resp)); err != nil {
				return
			}
		}
	})
	return f.addr()
}

// TestSMAMapMatchesSMADocument reads the sma_storage profile against the
// transcribed image: the two unsigned battery powers and the two grid
// powers each give one value in hearth's signs (battery positive
// discharging, grid positive exporting), a NaN in either part leaves the
// point without a value, and the write-only control registers are never
// asked for.
func TestSMAMapMatchesSMADocument(t *testing.T) {
	t.Parallel()
	p, err := EmbeddedProfile("sma_storage")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		patch map[uint16]uint16
		want  map[string]float64
		bad   string
	}{
		{"charging, importing", nil, map[string]float64{"power_w": -1234, "grid_power_w": -734, "soc_pct": 65}, ""},
		{"discharging, exporting", map[uint16]uint16{31394: 0, 31396: 2100, 30866: 0, 30868: 1600},
			map[string]float64{"power_w": 2100, "grid_power_w": 1600, "soc_pct": 65}, ""},
		{"discharge power NaN", map[uint16]uint16{31395: 0xFFFF, 31396: 0xFFFF},
			map[string]float64{"grid_power_w": -734, "soc_pct": 65}, "power_w"},
		{"feed-in NaN", map[uint16]uint16{30867: 0x8000, 30868: 0},
			map[string]float64{"power_w": -1234, "soc_pct": 65}, "grid_power_w"},
		{"charge power NaN", map[uint16]uint16{31393: 0xFFFF, 31394: 0xFFFF},
			map[string]float64{"grid_power_w": -734, "soc_pct": 65}, "power_w"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			image := map[uint16]uint16{}
			for a, x := range smaImage {
				image[a] = x
			}
			for a, x := range c.patch {
				image[a] = x
			}
			var mu sync.Mutex
			var asked [][2]uint16
			bus, err := OpenBus(LinkConfig{Transport: TransportTCP, Address: serveImage(t, image, &asked, &mu), Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer bus.Close()
			r, err := NewProfileDevice("inverter", bus, 3, p).Poll(context.Background(), time.Now)
			if err != nil {
				t.Fatal(err)
			}
			for name, w := range c.want {
				if got := r.Points[name]; !got.Good() || !near(got.Value, w) {
					t.Errorf("%s = %+v, want %g", name, got, w)
				}
			}
			if c.bad != "" {
				if got := r.Points[c.bad]; got.Good() || got.Quality != hearth.QualityOutOfRange {
					t.Errorf("%s = %+v with a NaN part, want out_of_range", c.bad, got)
				}
			}
			for name := range r.Points {
				if strings.HasPrefix(name, "sma_bms") || strings.HasPrefix(name, "sma_cha") || strings.HasPrefix(name, "sma_dsch") || name == "sma_grid_spt_w" {
					t.Errorf("write-only point %s is in the reading", name)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range asked {
				if a[0]+a[1] > 40000 {
					t.Errorf("a read of %d registers at %d: the write-only control registers were asked for", a[1], a[0])
				}
			}
		})
	}
}
