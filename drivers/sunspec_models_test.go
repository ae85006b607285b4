package drivers

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sunspec"
)

// imageServer answers Modbus TCP holding-register reads from a register
// image, and an illegal-address exception outside it: a SunSpec device
// that is not hearth's simulator. It counts the reads.
func imageServer(t *testing.T, image map[uint16]uint16) (*fakeServer, *atomic.Int64) {
	reads := new(atomic.Int64)
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			addr, n := binary.BigEndian.Uint16(req.pdu[1:]), binary.BigEndian.Uint16(req.pdu[3:])
			resp := []byte{req.pdu[0], byte(2 * n)}
			for a := range n {
				v, ok := image[addr+a]
				if !ok {
					resp = []byte{req.pdu[0] | 0x80, 2}
					break
				}
				resp = binary.BigEndian.AppendUint16(resp, v)
			}
			reads.Add(1)
			if _, err := c.Write(mbapFrame(req.tid, req.unit, resp)); err != nil {
				return
			}
		}
	})
	return f, reads
}

// model writes a model's header and block into image at addr, with the
// named points set (offsets from the definition), and returns the next
// model's address.
func putModel(image map[uint16]uint16, addr, id, length uint16, set map[uint16]uint16) uint16 {
	image[addr], image[addr+1] = id, length
	for i := range length {
		image[addr+2+i] = 0
	}
	for off, v := range set {
		image[addr+off] = v
	}
	return addr + 2 + length
}

func off(id uint16, point string) uint16 {
	p, _ := sunspec.Lookup(id).Point(point)
	return p.Offset
}

// Models 101 (single phase) and 160 (MPPT, two modules) decode with their
// scale factors, sentinels say not_implemented, and a poll costs the
// requests its plan says.
func TestSunSpecModels101And160(t *testing.T) {
	t.Parallel()
	image := map[uint16]uint16{40000: 0x5375, 40001: 0x6e53}
	a := putModel(image, 40002, 1, 66, map[uint16]uint16{})
	neg := func(v int16) uint16 { return uint16(v) }
	a = putModel(image, a, 101, 50, map[uint16]uint16{
		off(101, "A"): 123, off(101, "A_SF"): neg(-1), // 12.3 A
		off(101, "PhVphA"): 2301, off(101, "V_SF"): neg(-1), // 230.1 V
		off(101, "W"): neg(-2500), off(101, "W_SF"): 0, // -2500 W
		off(101, "Hz"): 5002, off(101, "Hz_SF"): neg(-2), // 50.02 Hz
		off(101, "WH_SF"): 0,                             // WH acc32 0: not implemented
		off(101, "DCW"):   0x8000, off(101, "DCW_SF"): 0, // sentinel
		off(101, "TmpCab"): 415, off(101, "TmpSnk"): 0x8000, off(101, "Tmp_SF"): neg(-1),
	})
	def160 := sunspec.Lookup(160)
	mod := func(k int, name string) uint16 {
		for _, p := range def160.RepeatPoints {
			if p.Name == name {
				return 2 + def160.FixedLen + uint16(k)*def160.RepeatLen + p.Offset
			}
		}
		t.Fatalf("model 160 has no %s", name)
		return 0
	}
	a = putModel(image, a, 160, def160.FixedLen+2*def160.RepeatLen, map[uint16]uint16{
		off(160, "DCA_SF"): neg(-2), off(160, "DCV_SF"): neg(-1), off(160, "DCW_SF"): 1, off(160, "N"): 2,
		mod(0, "DCA"): 812, mod(0, "DCV"): 3805, mod(0, "DCW"): 309, // 8.12 A, 380.5 V, 3090 W
		mod(1, "DCA"): 401, mod(1, "DCV"): 2999, mod(1, "DCW"): 0xFFFF, // DCW not implemented
	})
	image[a], image[a+1] = 0xFFFF, 0

	f, reads := imageServer(t, image)
	b := openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: time.Second})
	d := NewSunSpecDevice("pv", b, 1)
	ctx := context.Background()
	if _, err := d.Poll(ctx, time.Now); err != nil {
		t.Fatal(err)
	}
	before := reads.Load()
	r, err := d.Poll(ctx, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, plan := d.PollPlan()
	if n := reads.Load() - before; n != int64(len(plan)) {
		t.Errorf("a poll took %d reads, its plan says %d", n, len(plan))
	}
	for name, want := range map[string]float64{
		"ac_a": 12.3, "ac_v": 230.1, "ac_power_w": -2500, "ac_hz": 50.02, "temp_c": 41.5,
		"mppt1_dc_a": 8.12, "mppt1_dc_v": 380.5, "mppt1_dc_w": 3090, "mppt2_dc_a": 4.01, "mppt2_dc_v": 299.9,
	} {
		if p := r.Points[name]; !p.Good() || p.Value != want {
			t.Errorf("%s = %+v, want %g", name, p, want)
		}
	}
	for _, name := range []string{"ac_energy_wh", "dc_power_w", "temp_sink_c", "mppt2_dc_w"} {
		if p := r.Points[name]; p.Quality != "not_implemented" {
			t.Errorf("%s = %+v, want not_implemented", name, p)
		}
	}
	if _, ok := r.Points["mppt3_dc_w"]; ok {
		t.Error("a third MPPT module is reported; the model has two")
	}
}
