package drivers

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
)

// BenchmarkPlan reports, for each embedded profile, the reads one poll
// cycle takes and its time on a 9600-baud RTU line, against the
// theoretical minimum: the points' registers only, in as few reads as the
// 125-register limit allows (11 bits a character, 3.5 characters of
// silence after each frame). The sunspec profile is measured on the
// simulator: the requests one Poll makes after discovery.
func BenchmarkPlan(b *testing.B) {
	const baud = 9600
	ms := func(chars float64) float64 { return chars * 11 / baud * 1000 }
	for _, name := range EmbeddedProfiles() {
		p, err := EmbeddedProfile(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			if p.Discovery == "sunspec" {
				benchSunSpecPoll(b)
				return
			}
			var reqs []ReadRequest
			for b.Loop() {
				reqs = Plan(p.Points, p.Holes, p.MaxGap)
			}
			c := Cost(p.Points, reqs)
			b.ReportMetric(float64(c.Requests), "req/cycle")
			b.ReportMetric(float64(c.MinRequests), "min-req/cycle")
			b.ReportMetric(ms(c.Chars), "bus-ms/cycle")
			b.ReportMetric(ms(c.MinChars), "min-bus-ms/cycle")
			b.ReportMetric(c.Chars/c.MinChars, "x-min")
		})
	}
}

// benchSunSpecPoll counts the requests and registers of one SunSpec Poll
// against the simulator.
func benchSunSpecPoll(b *testing.B) {
	s := sim.New(sim.Config{UnitID: 1, Now: func() time.Time { return noon }})
	cfg := serveSimsB(b, s)
	bus, err := OpenBus(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	d := NewSunSpecDevice("bench", bus, 1)
	ctx := context.Background()
	if _, err := d.Poll(ctx, time.Now); err != nil {
		b.Fatal(err)
	}
	var reqs uint64
	for b.Loop() {
		before := bus.Stats().Requests
		if _, err := d.Poll(ctx, time.Now); err != nil {
			b.Fatal(err)
		}
		reqs = bus.Stats().Requests - before
	}
	// Registers per Poll: the fixed blocks of models 802, 124 and 103.
	regs := 0
	for _, m := range d.Models() {
		switch m.ID {
		case 802, 124, 103, 101, 102:
			regs += int(m.Length) + 2
		}
	}
	chars := float64(reqs)*ReadChars(0) + float64(2*regs)
	b.ReportMetric(float64(reqs), "req/cycle")
	b.ReportMetric(chars*11/9600*1000, "bus-ms/cycle")
}

func serveSimsB(b *testing.B, s *sim.Simulator) LinkConfig {
	ln, err := listenLocal()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.ServeTCP(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return LinkConfig{Transport: TransportTCP, Address: ln.Addr().String(), Timeout: time.Second}
}
