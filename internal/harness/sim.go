package harness

import (
	"context"
	"net"
	"testing"

	"github.com/hearth-energy/hearth/drivers/sim"
)

// StartSim serves a simulator over Modbus TCP on a free loopback port
// until the test ends, and returns it with its address. Its write log is
// the record of every command a device driver applied.
func StartSim(t testing.TB, cfg sim.Config) (*sim.Simulator, string) {
	t.Helper()
	s := sim.New(cfg)
	addr, _ := serve(t, s.ServeTCP)
	return s, addr
}

// StartVendorSim serves a vendor simulator as StartSim does. stop ends the
// service before the test does, as a link that drops (the simulated
// battery runs on), and returns once it has ended.
func StartVendorSim(t testing.TB, cfg sim.VendorConfig) (v *sim.Vendor, addr string, stop func()) {
	t.Helper()
	v, err := sim.NewVendor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop = serve(t, v.ServeTCP)
	return v, addr, stop
}

// serve runs srv on a free loopback port until stop or the test's end.
func serve(t testing.TB, srv func(context.Context, net.Listener) error) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv(ctx, ln)
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}
