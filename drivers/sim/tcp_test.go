package sim

import (
	"context"
	"errors"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// isClosed reports whether err says the peer closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

var markerRead = readPDU(fcReadHolding, 40000, 2)

func checkMarker(t *testing.T, resp []byte) {
	t.Helper()
	if want := []byte{0x03, 4, 0x53, 0x75, 0x6e, 0x53}; !slices.Equal(resp, want) {
		t.Fatalf("marker read: % x, want % x", resp, want)
	}
}

func TestUnknownUnitGetsNoResponse(t *testing.T) {
	t.Parallel()
	_, addr := startSim(t, Config{UnitID: 3, Now: clocktest.New(noon).Now})
	c := dial(t, addr)
	if _, err := c.send(1, markerRead); err != nil {
		t.Fatal(err)
	}
	if _, _, resp, err := c.recv(300 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("unit 1 on a unit-3 device: got % x err %v, want silence", resp, err)
	}
	// The connection still serves the right unit, and the next response
	// is for the next request.
	resp, err := c.roundTrip(3, markerRead)
	if err != nil {
		t.Fatal(err)
	}
	checkMarker(t, resp)
}

func TestFaults(t *testing.T) {
	t.Parallel()
	s, addr := startSim(t, Config{Now: clocktest.New(noon).Now})

	t.Run("latency", func(t *testing.T) {
		c := dial(t, addr)
		s.SetFault(Fault{Latency: 200 * time.Millisecond, Requests: 1})
		start := time.Now()
		checkMarker(t, c.call(markerRead))
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("answered after %v, want at least 200ms", d)
		}
		s.mu.Lock()
		left := s.fault
		s.mu.Unlock()
		if left != (Fault{}) {
			t.Errorf("fault with Requests 1 still set after one request: %+v", left)
		}
	})

	t.Run("no response", func(t *testing.T) {
		c := dial(t, addr)
		s.SetFault(Fault{NoResponse: true, Requests: 1})
		if _, err := c.send(1, markerRead); err != nil {
			t.Fatal(err)
		}
		if _, _, resp, err := c.recv(300 * time.Millisecond); !isTimeout(err) {
			t.Fatalf("got % x err %v, want no response", resp, err)
		}
		checkMarker(t, c.call(markerRead))
	})

	t.Run("no response write not executed", func(t *testing.T) {
		c := dial(t, addr)
		mod, _ := s.PointAddr(124, "StorCtl_Mod")
		before := len(s.Writes())
		s.SetFault(Fault{NoResponse: true})
		if _, err := c.send(1, writePDU(mod, 2)); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.recv(200 * time.Millisecond); !isTimeout(err) {
			t.Fatalf("err %v, want no response", err)
		}
		s.SetFault(Fault{})
		if st := s.State(); st.Mode != ModeSelfConsumption || len(s.Writes()) != before {
			t.Errorf("unanswered write took effect: mode %s", st.Mode)
		}
	})

	t.Run("exception", func(t *testing.T) {
		c := dial(t, addr)
		s.SetFault(Fault{Exception: ExceptionServerBusy})
		for range 2 {
			if got := c.call(markerRead); !slices.Equal(got, []byte{0x83, 0x06}) {
				t.Errorf("got % x, want 83 06", got)
			}
		}
		s.SetFault(Fault{})
		checkMarker(t, c.call(markerRead))
	})

	t.Run("drop", func(t *testing.T) {
		c := dial(t, addr)
		s.SetFault(Fault{Drop: true, Requests: 1})
		if _, err := c.send(1, markerRead); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.recv(5 * time.Second); !isClosed(err) {
			t.Fatalf("err %v, want the connection closed", err)
		}
		checkMarker(t, dial(t, addr).call(markerRead))
	})

	t.Run("corrupt", func(t *testing.T) {
		c := dial(t, addr)
		s.SetFault(Fault{Corrupt: true, Requests: 1})
		tid, err := c.send(1, markerRead)
		if err != nil {
			t.Fatal(err)
		}
		got, _, _, err := c.recv(5 * time.Second)
		if err != nil || got == tid {
			t.Fatalf("tid %d err %v, want a response with a tid other than %d", got, err, tid)
		}
	})
}

func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	clk := clocktest.New(noon)
	s, addr := startSim(t, Config{Now: clk.Now})
	hb, _ := s.PointAddr(802, "CtrlHb")
	start, _ := s.ModelAddr(802)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		c := dial(t, addr)
		wg.Go(func() {
			for j := range 50 {
				if i%2 == 0 {
					resp, err := c.roundTrip(1, writePDU(hb, uint16(j)))
					if err == nil && resp[0] != fcWriteSingle {
						err = errors.New("write refused")
					}
					if err != nil {
						errs <- err
						return
					}
					clk.Advance(time.Second)
					continue
				}
				resp, err := c.roundTrip(1, readPDU(fcReadHolding, start, 64))
				if err == nil {
					var regs []uint16
					regs, err = decodeRead(resp, 64)
					if err == nil && (regs[0] != 802 || regs[1] != 62) {
						err = errors.New("model 802 header wrong")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(s.Writes()); n != 4*50 {
		t.Errorf("write log has %d entries, want 200", n)
	}
}

func TestServeTCPShutdown(t *testing.T) {
	t.Parallel()
	s := New(Config{Now: clocktest.New(noon).Now})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeTCP(ctx, ln) }()

	idle := dial(t, ln.Addr().String())
	checkMarker(t, idle.call(markerRead))
	// One client is stuck behind an hour of latency.
	stuck := dial(t, ln.Addr().String())
	s.SetFault(Fault{Latency: time.Hour})
	if _, err := stuck.send(1, markerRead); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the request reach the latency wait
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeTCP = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeTCP did not return after cancel")
	}
	for _, c := range []*client{idle, stuck} {
		if _, _, _, err := c.recv(5 * time.Second); !isClosed(err) {
			t.Errorf("after shutdown: %v, want the connection closed", err)
		}
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepting after shutdown")
	}
}
