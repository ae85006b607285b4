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
// the requests of a minute of polls after discovery (benchSunSpecPoll).
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

// benchSunSpecPoll counts the requests of a minute of 1 Hz SunSpec polls
// against the simulator after discovery, the static refresh included, and
// reports their bus time per poll against the least any plan needs to
// read the points a reading carries once (x-opt: the figure
// rtu_bus_time_ratio) and against the lower bound of those points'
// registers alone (x-min).
func benchSunSpecPoll(b *testing.B) {
	clock := noon
	now := func() time.Time { return clock }
	s := sim.New(sim.Config{UnitID: 1, Now: now})
	cfg := serveSimsB(b, s)
	bus, err := OpenBus(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	d := NewSunSpecDevice("bench", bus, 1)
	ctx := context.Background()
	if _, err := d.Poll(ctx, now); err != nil {
		b.Fatal(err)
	}
	cycles := int(StaticRefresh / time.Second)
	var reqs uint64
	for b.Loop() {
		before := bus.Stats().Requests
		for range cycles {
			clock = clock.Add(time.Second)
			if _, err := d.Poll(ctx, now); err != nil {
				b.Fatal(err)
			}
		}
		reqs = bus.Stats().Requests - before
	}
	specs, plan := d.PollPlan()
	statics, staticPlan := d.StaticPlan()
	if want := uint64(cycles*len(plan) + len(staticPlan)); reqs != want {
		b.Fatalf("a minute of polls made %d requests, its plans say %d", reqs, want)
	}
	ms := func(chars float64) float64 { return chars * 11 / 9600 * 1000 }
	c := Cost(specs, plan)
	perPoll := c.Chars + Cost(statics, staticPlan).Chars/float64(cycles)
	opt := OptimalCost(specs, nil)
	b.ReportMetric(float64(reqs)/float64(cycles), "req/cycle")
	b.ReportMetric(ms(perPoll), "bus-ms/cycle")
	b.ReportMetric(ms(Cost(statics, staticPlan).Chars), "static-bus-ms/refresh")
	b.ReportMetric(ms(opt), "opt-bus-ms/cycle")
	b.ReportMetric(perPoll/opt, "x-opt")
	b.ReportMetric(float64(c.MinRequests), "min-req/cycle")
	b.ReportMetric(ms(c.MinChars), "min-bus-ms/cycle")
	b.ReportMetric(perPoll/c.MinChars, "x-min")
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
