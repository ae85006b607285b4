package control

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"github.com/hearth-energy/hearth/internal/harness"
)

// slowWrites relays Modbus TCP to target and lets took pass on clock while
// the device takes each write request (FC 06, FC 16): a write that takes
// time, as on a serial line with a vendor's pause between commands.
func slowWrites(t *testing.T, target string, clock *clocktest.Clock, took time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	frame := func(r io.Reader) ([]byte, error) {
		head := make([]byte, 6)
		if _, err := io.ReadFull(r, head); err != nil {
			return nil, err
		}
		rest := make([]byte, binary.BigEndian.Uint16(head[4:]))
		if _, err := io.ReadFull(r, rest); err != nil {
			return nil, err
		}
		return append(head, rest...), nil
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer d.Close()
				for {
					req, err := frame(c)
					if err != nil || len(req) < 8 {
						return
					}
					if fc := req[7]; fc == 0x06 || fc == 0x10 {
						clock.Advance(took)
					}
					if _, err := d.Write(req); err != nil {
						return
					}
					resp, err := frame(d)
					if err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// An Alpha ESS whose dispatch block the write budget paces (unknown
// storage) holds a 300 s dispatch time. Under a lease that holds one power
// the control loop refreshes the command a third of that after it last
// wrote it, on its tick; each write takes the device 300 ms. The device
// is written every third of its timeout (and a tick), not every other
// refresh: the budget counts a third of the timeout from when the write
// returned, and the loop counted from the start of the step that made it,
// 300 ms earlier, so the budget took the loop's refresh for a repeat and
// held it; the device went two thirds of its timeout without a write, and
// a link that then dropped for a third of it let the dispatch lapse under
// the lease.
func TestRefreshIsWrittenThroughTheBudget(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(ctlT0)
	v, addr, _ := harness.StartVendorSim(t, sim.VendorConfig{Profile: "alphaess", Now: clock.Now})
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: slowWrites(t, addr, clock, 300*time.Millisecond), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	p, err := drivers.EmbeddedProfile("alphaess")
	if err != nil {
		t.Fatal(err)
	}
	dev := vendorBattery{drivers.NewVendorDevice("battery", bus, v.Unit(), p, clock.Now)}
	store := testStore(t, clock)
	c, err := New(Options{Limits: testSafetyLimits(), Store: store, Devices: []Device{dev}, Event: storeEvent(store), Now: clock.Instant})
	if err != nil {
		t.Fatal(err)
	}
	r := &siteRig{t: t, clock: clock}
	start := clock.Now()
	tick := 0
	cycle := func() {
		// The loop's tick: on the second, however long the writes before it took.
		tick++
		clock.Advance(start.Add(time.Duration(tick) * time.Second).Sub(clock.Now()))
		c.Observe(r.reading("battery", v.State().BatteryW))
		c.Step(context.Background())
	}
	cycle()
	c.Submit(lease(1, clock.Now(), time.Hour, hearth.ModePower, -1000), clock.Instant())
	for range 10 {
		cycle()
	}
	if got := v.State().BatteryW; got != -1000 {
		t.Fatalf("the battery runs %v W, want the lease's -1000 W", got)
	}
	from := len(v.Writes())
	for range 15 * 60 {
		cycle()
	}
	rt := dev.RevertTimeout()
	ws := v.Writes()[from:]
	if len(ws) == 0 {
		t.Fatalf("no write in 15 minutes of a lease on a device whose timeout is %v", rt)
	}
	last := ws[0].Time
	for _, w := range ws[1:] {
		if gap := w.Time.Sub(last); gap > rt/3+2*time.Second {
			t.Fatalf("the device went %v without a write under a lease (timeout %v, refreshed every third of it): %d writes in 15 minutes", gap, rt, len(ws))
		}
		last = w.Time
	}
	if st := v.State(); !st.Forced || st.Reverts != 0 {
		t.Fatalf("the dispatch lapsed under the lease: %+v", st)
	}
}

// Two batteries under site_max_discharge_w 3000, battery2 an Alpha ESS
// (a 300 s dispatch time) whose writes take 2 s to reach it (a serial
// line, a poll ahead of them on the bus). When battery2's link drops
// while it discharges 1500 W, the controller counts it at 1500 W until
// its dispatch time has really run out: 300 s after the write reached the
// device, not 300 s after the step that began it, or battery1 takes
// battery2's share while battery2 still runs it.
func TestSiteCapCountsFromTheWriteTheDeviceGot(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(ctlT0)
	v, addr, cut := harness.StartVendorSim(t, sim.VendorConfig{Profile: "alphaess", Now: clock.Now})
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: slowWrites(t, addr, clock, 2*time.Second), Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	p, err := drivers.EmbeddedProfile("alphaess")
	if err != nil {
		t.Fatal(err)
	}
	b2 := vendorBattery{drivers.NewVendorDevice("battery2", bus, v.Unit(), p, clock.Now)}
	newVendorSite(t, clock, v, cut, b2, 2000).holdsTheCapThroughADrop(400)
}
