package sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sunspec"
)

// noon is a summer noon, when PV is at its peak.
var noon = time.Date(2026, 6, 21, 12, 0, 0, 0, time.UTC)

// startSim serves a new simulator on 127.0.0.1:0 until the test ends, and
// checks ServeTCP returns nil on cancellation.
func startSim(t *testing.T, cfg Config) (*Simulator, string) {
	t.Helper()
	s := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeTCP(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeTCP returned %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeTCP did not return after cancel")
		}
	})
	return s, ln.Addr().String()
}

// client is a raw Modbus TCP client, written for these tests.
type client struct {
	t   *testing.T
	c   net.Conn
	tid uint16
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c}
}

func (c *client) send(unit byte, pdu []byte) (uint16, error) {
	c.tid++
	frame := make([]byte, 7+len(pdu))
	binary.BigEndian.PutUint16(frame[0:], c.tid)
	binary.BigEndian.PutUint16(frame[4:], uint16(1+len(pdu)))
	frame[6] = unit
	copy(frame[7:], pdu)
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.c.Write(frame)
	return c.tid, err
}

func (c *client) recv(wait time.Duration) (tid uint16, unit byte, pdu []byte, err error) {
	c.c.SetReadDeadline(time.Now().Add(wait))
	var hdr [7]byte
	if _, err := io.ReadFull(c.c, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	if p := binary.BigEndian.Uint16(hdr[2:]); p != 0 {
		return 0, 0, nil, fmt.Errorf("protocol id %d", p)
	}
	n := int(binary.BigEndian.Uint16(hdr[4:]))
	if n < 2 {
		return 0, 0, nil, fmt.Errorf("length %d", n)
	}
	pdu = make([]byte, n-1)
	if _, err := io.ReadFull(c.c, pdu); err != nil {
		return 0, 0, nil, err
	}
	return binary.BigEndian.Uint16(hdr[0:]), hdr[6], pdu, nil
}

// roundTrip sends a request and returns the matching response PDU.
func (c *client) roundTrip(unit byte, pdu []byte) ([]byte, error) {
	tid, err := c.send(unit, pdu)
	if err != nil {
		return nil, err
	}
	got, u, resp, err := c.recv(5 * time.Second)
	if err != nil {
		return nil, err
	}
	if got != tid || u != unit {
		return nil, fmt.Errorf("response tid %d unit %d, want tid %d unit %d", got, u, tid, unit)
	}
	return resp, nil
}

func (c *client) call(pdu []byte) []byte {
	c.t.Helper()
	resp, err := c.roundTrip(1, pdu)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

func readPDU(fc byte, addr, n uint16) []byte {
	return []byte{fc, byte(addr >> 8), byte(addr), byte(n >> 8), byte(n)}
}

func writePDU(addr uint16, vals ...uint16) []byte {
	if len(vals) == 1 {
		return []byte{fcWriteSingle, byte(addr >> 8), byte(addr), byte(vals[0] >> 8), byte(vals[0])}
	}
	p := []byte{fcWriteMultiple, byte(addr >> 8), byte(addr), 0, byte(len(vals)), byte(2 * len(vals))}
	for _, v := range vals {
		p = append(p, byte(v>>8), byte(v))
	}
	return p
}

func decodeRead(resp []byte, n uint16) ([]uint16, error) {
	if len(resp) == 2 && resp[0]&0x80 != 0 {
		return nil, fmt.Errorf("exception 0x%02x", resp[1])
	}
	if len(resp) != 2+2*int(n) || int(resp[1]) != 2*int(n) {
		return nil, fmt.Errorf("malformed read response % x", resp)
	}
	regs := make([]uint16, n)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(resp[2+2*i:])
	}
	return regs, nil
}

func (c *client) read(addr, n uint16) []uint16 {
	c.t.Helper()
	regs, err := decodeRead(c.call(readPDU(fcReadHolding, addr, n)), n)
	if err != nil {
		c.t.Fatalf("read %d+%d: %v", addr, n, err)
	}
	return regs
}

func (c *client) write(addr uint16, vals ...uint16) {
	c.t.Helper()
	req := writePDU(addr, vals...)
	resp := c.call(req)
	want := req
	if len(vals) > 1 {
		want = req[:5]
	}
	if string(resp) != string(want) {
		c.t.Fatalf("write %d %v: response % x, want % x", addr, vals, resp, want)
	}
}

// device is what a driver learns by walking the model chain.
type device struct {
	c      *client
	starts map[uint16]uint16
}

type model struct {
	id, len uint16
	addr    uint16
}

// walk reads the SunS marker at base and the model chain after it.
func walk(c *client, base uint16) []model {
	c.t.Helper()
	if m := c.read(base, 2); uint32(m[0])<<16|uint32(m[1]) != sunspec.Marker {
		c.t.Fatalf("marker at %d = %04x %04x, want SunS", base, m[0], m[1])
	}
	var chain []model
	addr := base + 2
	for range 20 {
		h := c.read(addr, 2)
		chain = append(chain, model{id: h[0], len: h[1], addr: addr})
		if h[0] == sunspec.EndModelID {
			return chain
		}
		addr += 2 + h[1]
	}
	c.t.Fatal("no end marker after 20 models")
	return nil
}

func discover(c *client, base uint16) *device {
	d := &device{c: c, starts: map[uint16]uint16{}}
	for _, m := range walk(c, base) {
		d.starts[m.id] = m.addr
	}
	return d
}

func (d *device) def(modelID uint16, name string) sunspec.PointDef {
	d.c.t.Helper()
	p, ok := sunspec.Lookup(modelID).Point(name)
	if !ok {
		d.c.t.Fatalf("no point %d.%s", modelID, name)
	}
	return p
}

func (d *device) addr(modelID uint16, name string) uint16 {
	return d.starts[modelID] + d.def(modelID, name).Offset
}

func (d *device) regs(modelID uint16, name string) []uint16 {
	d.c.t.Helper()
	p := d.def(modelID, name)
	return d.c.read(d.starts[modelID]+p.Offset, p.Size)
}

// value reads a point and applies its scale factor; it fails the test on
// a not-implemented sentinel.
func (d *device) value(modelID uint16, name string) float64 {
	d.c.t.Helper()
	p := d.def(modelID, name)
	r := d.regs(modelID, name)
	if sunspec.IsNotImplemented(p.Type, r) {
		d.c.t.Fatalf("%d.%s not implemented: %04x", modelID, name, r)
	}
	var sf int16
	if p.SF != "" {
		sfr := d.regs(modelID, p.SF)
		if sunspec.IsNotImplemented("sunssf", sfr) {
			d.c.t.Fatalf("%d.%s not implemented", modelID, p.SF)
		}
		sf = int16(sfr[0])
	}
	return sunspec.Scale(sunspec.Raw(p.Type, r), sf)
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
