package drivers

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
)

// BenchmarkPlan reports, for each embedded profile, the reads one poll
// cycle takes and its time on a 9600-baud RTU line (11 bits a character,
// 3.5 characters of silence after each frame), against two references:
// the optimal plan (opt-bus-ms, the cheapest any planner can do without
// reading a hole) and a lower bound no plan reaches (min-bus-ms: the
// points' registers only, in as few reads as the 125-register limit
// allows, gaps free). The sunspec profile is measured on the simulator:
// the requests one Poll makes after discovery.
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
			b.ReportMetric(ms(OptimalCost(p.Points, p.Holes)), "opt-bus-ms/cycle")
			b.ReportMetric(c.Chars/OptimalCost(p.Points, p.Holes), "x-opt")
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
	specs, plan := d.PollPlan()
	if reqs != uint64(len(plan)) {
		b.Fatalf("a poll made %d requests, its plan says %d", reqs, len(plan))
	}
	ms := func(chars float64) float64 { return chars * 11 / 9600 * 1000 }
	c := Cost(specs, plan)
	opt := OptimalCost(specs, nil)
	b.ReportMetric(float64(reqs), "req/cycle")
	b.ReportMetric(ms(c.Chars), "bus-ms/cycle")
	b.ReportMetric(ms(opt), "opt-bus-ms/cycle")
	b.ReportMetric(c.Chars/opt, "x-opt")
	b.ReportMetric(float64(c.MinRequests), "min-req/cycle")
	b.ReportMetric(ms(c.MinChars), "min-bus-ms/cycle")
	b.ReportMetric(c.Chars/c.MinChars, "x-min")
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
