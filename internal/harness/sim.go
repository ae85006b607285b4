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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeTCP(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s, ln.Addr().String()
}
