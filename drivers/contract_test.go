package drivers

import (
	"context"
	"errors"
	"math"
	"net"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/serial"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/drivers/sim/ptypair"
)

// noon is a summer noon, when the simulated PV is at its peak.
var noon = time.Date(2026, 6, 21, 12, 0, 0, 0, time.UTC)

// serveSims serves sims on a new link of the given transport until the
// test ends and returns the link's config. TCP serves the first simulator
// only (one device behind one socket).
func serveSims(t *testing.T, transport string, sims ...*sim.Simulator) LinkConfig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var cfg LinkConfig
	switch transport {
	case TransportTCP, TransportRTUOverTCP:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg = LinkConfig{Transport: transport, Address: ln.Addr().String()}
		go func() {
			if transport == TransportTCP {
				done <- sims[0].ServeTCP(ctx, ln)
			} else {
				done <- sim.ServeRTUOverTCP(ctx, ln, sims...)
			}
		}()
	case TransportRTU:
		client, device := ptypair.Start(t)
		f, err := serial.Open(device, serial.Config{Baud: 9600})
		if err != nil {
			t.Fatal(err)
		}
		cfg = LinkConfig{Transport: transport, Address: client, Baud: 9600}
		go func() { done <- sim.ServeRTU(ctx, f, sims...) }()
	default:
		t.Fatalf("transport %q", transport)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve %s: %v", transport, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("serve %s did not return", transport)
		}
	})
	cfg.Timeout = time.Second
	return cfg
}

var transports = []string{TransportTCP, TransportRTU, TransportRTUOverTCP}

// TestTransportContract runs the same behaviour checks over every
// transport, against the simulator.
func TestTransportContract(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			s := sim.New(sim.Config{UnitID: 3, Serial: "CONTRACT-1", InitialSoC: 42, Now: func() time.Time { return noon }})
			cfg := serveSims(t, tr, s)
			cfg.DownAfter = 1000
			b := openBus(t, cfg)
			ctx := context.Background()

			t.Run("discover and poll", func(t *testing.T) {
				d := NewSunSpecDevice("battery", b, 3)
				r, err := d.Poll(ctx, time.Now)
				if err != nil {
					t.Fatal(err)
				}
				if got := d.Identity().Serial; got != "CONTRACT-1" {
					t.Errorf("serial %q, want CONTRACT-1", got)
				}
				if p := r.Points["soc_pct"]; !p.Good() || math.Abs(p.Value-42) > 0.5 {
					t.Errorf("soc_pct %+v, want 42", p)
				}
			})
			t.Run("exception", func(t *testing.T) {
				_, err := b.Read(ctx, 3, Holding, 1, 2)
				var exc *ExceptionError
				if !errors.As(err, &exc) || exc.Code != 2 {
					t.Fatalf("read of an unmapped address: got %v, want exception 2", err)
				}
			})
			t.Run("max read", func(t *testing.T) {
				regs, err := b.Read(ctx, 3, Holding, 40000, MaxReadRegisters)
				if err != nil || len(regs) != MaxReadRegisters || regs[0] != 0x5375 {
					t.Fatalf("read 125 registers: %d registers, err %v", len(regs), err)
				}
			})
			t.Run("silent unit", func(t *testing.T) {
				b.ConfigureUnit(9, UnitConfig{Timeout: 100 * time.Millisecond, Retries: -1})
				if _, err := b.Read(ctx, 9, Holding, 40000, 2); !errors.Is(err, ErrTimeout) {
					t.Fatalf("read of an absent unit: got %v, want a timeout", err)
				}
				if _, err := b.Read(ctx, 3, Holding, 40000, 2); err != nil {
					t.Fatalf("read after a silent unit: %v", err)
				}
			})
			t.Run("late reply", func(t *testing.T) {
				s.SetFault(sim.Fault{Latency: 2 * cfg.Timeout, Requests: 1})
				if _, err := b.Read(ctx, 3, Holding, 40000, 2); err == nil {
					t.Fatal("read with latency twice the timeout succeeded")
				}
				time.Sleep(3 * cfg.Timeout) // the late reply arrives meanwhile
				regs, err := b.Read(ctx, 3, Holding, 40002, 2)
				if err != nil || regs[0] != 1 || regs[1] != 66 {
					t.Fatalf("read after a late reply: %v %v, want model 1 header [1 66]", regs, err)
				}
			})
			t.Run("corrupt", func(t *testing.T) {
				s.SetFault(sim.Fault{Corrupt: true, Requests: 1})
				if regs, err := b.Read(ctx, 3, Holding, 40000, 2); err == nil {
					t.Fatalf("corrupt frame accepted: %v", regs)
				}
				if _, err := b.Read(ctx, 3, Holding, 40000, 2); err != nil {
					t.Fatalf("read after a corrupt frame: %v", err)
				}
			})
			t.Run("injected exception", func(t *testing.T) {
				s.SetFault(sim.Fault{Exception: 4, Requests: 1})
				_, err := b.Read(ctx, 3, Holding, 40000, 2)
				var exc *ExceptionError
				if !errors.As(err, &exc) || exc.Code != 4 {
					t.Fatalf("got %v, want exception 4", err)
				}
			})
			t.Run("write", func(t *testing.T) {
				addr, _ := s.PointAddr(124, "InOutWRte_RvrtTms")
				if err := b.write(ctx, 3, addr, []uint16{600}); err != nil {
					t.Fatal(err)
				}
				ws := s.Writes()
				if len(ws) == 0 {
					t.Fatal("simulator saw no write")
				}
				w := ws[len(ws)-1]
				if w.Addr != addr || len(w.Values) != 1 || w.Values[0] != 600 || w.Exception != 0 {
					t.Errorf("simulator saw %+v, want 600 at %d", w, addr)
				}
			})
		})
	}
}

// Three units share one RTU line and one of them goes silent: the other
// two keep their poll rate, and the silent one is probed on a back-off
// schedule instead of costing a timeout every poll.
func TestSilentUnitDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	now := func() time.Time { return noon }
	sims := []*sim.Simulator{
		sim.New(sim.Config{UnitID: 1, Serial: "U1", Now: now}),
		sim.New(sim.Config{UnitID: 2, Serial: "U2", Now: now}),
		sim.New(sim.Config{UnitID: 3, Serial: "U3", Now: now}),
	}
	cfg := serveSims(t, TransportRTU, sims...)
	cfg.Timeout = 300 * time.Millisecond
	cfg.Retries = 1
	cfg.MaxBackoff = 2 * time.Second
	b, err := OpenBus(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	const interval = 200 * time.Millisecond
	const window = 4 * time.Second
	sims[2].SetFault(sim.Fault{NoResponse: true})

	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	type count struct{ ok, failed int }
	counts := make([]chan count, 3)
	for i := range sims {
		counts[i] = make(chan count, 1)
		go func() {
			d := NewSunSpecDevice("d", b, uint8(i+1))
			var c count
			tk := time.NewTicker(interval)
			defer tk.Stop()
			for {
				if _, err := d.Poll(ctx, time.Now); err == nil {
					c.ok++
				} else if ctx.Err() == nil {
					c.failed++
				}
				select {
				case <-ctx.Done():
					counts[i] <- c
					return
				case <-tk.C:
				}
			}
		}()
	}
	var got [3]count
	for i := range got {
		got[i] = <-counts[i]
	}
	t.Logf("polls %+v; bus %+v; units %+v %+v %+v", got, b.Stats(), b.UnitStats(1), b.UnitStats(2), b.UnitStats(3))
	// At 200 ms for 4 s a healthy unit polls about 20 times. Were every
	// poll of the silent unit to cost its timeouts (three base addresses,
	// each with a retry: 1.8 s), the others would manage 4 at most. Ask
	// for 8, which leaves room for a loaded machine.
	for i := 0; i < 2; i++ {
		if got[i].ok < 8 || got[i].failed != 0 {
			t.Errorf("unit %d: %d polls ok, %d failed; want at least 8 ok and none failed", i+1, got[i].ok, got[i].failed)
		}
	}
	if got[2].ok != 0 {
		t.Errorf("silent unit: %d polls ok, want 0", got[2].ok)
	}
	st := b.UnitStats(3)
	if !st.Down || st.Skipped == 0 {
		t.Errorf("silent unit stats %+v: want it marked down and polls skipped", st)
	}
	// The link saw few attempts for the silent unit: its first request
	// and retry, then a probe per back-off period (≥ 0.5 s).
	if st.Failures > 10 {
		t.Errorf("silent unit cost the link %d timeouts in %s, want at most 10", st.Failures, window)
	}

	// When it answers again, it is back within a probe period.
	sims[2].SetFault(sim.Fault{})
	deadline := time.Now().Add(5 * time.Second)
	d := NewSunSpecDevice("d", b, 3)
	for {
		if _, err := d.Poll(context.Background(), time.Now); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unit 3 not back after its fault cleared: %+v", b.UnitStats(3))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
