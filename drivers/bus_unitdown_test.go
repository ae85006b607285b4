package drivers

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestUnitDownKeepsTheCause: once a unit is marked down, requests refused
// without asking still say why it went down.
func TestUnitDownKeepsTheCause(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	bus, err := OpenBus(LinkConfig{Transport: TransportTCP, Address: addr, Timeout: 200 * time.Millisecond, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	ctx := context.Background()
	if _, err := bus.Read(ctx, 1, Holding, 40000, 2); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("first read: %v, want connection refused", err)
	}
	_, err = bus.Read(ctx, 1, Holding, 40000, 2)
	var down *UnitDownError
	if !errors.Is(err, ErrUnitDown) || !errors.As(err, &down) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("read of the unit marked down: %v; want ErrUnitDown wrapping the refused connection", err)
	}
}
