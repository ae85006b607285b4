package drivers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
)

// memHoles is a HoleStore in memory.
type memHoles struct {
	mu sync.Mutex
	m  map[string]LearnedHoles
}

func (s *memHoles) LoadHoles(device string) (LearnedHoles, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.m[device]
	return h, ok, nil
}

func (s *memHoles) SaveHoles(device string, h LearnedHoles) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]LearnedHoles{}
	}
	s.m[device] = h
	return nil
}

// refuse makes the simulator refuse each MODEL.POINT with exception 2.
func refuse(t *testing.T, s *sim.Simulator, points ...string) {
	t.Helper()
	for _, mp := range points {
		model, point, _ := strings.Cut(mp, ".")
		id, err := strconv.ParseUint(model, 10, 16)
		if err == nil {
			err = s.Refuse(uint16(id), point)
		}
		if err != nil {
			t.Fatalf("refuse %s: %v", mp, err)
		}
	}
}

// wantGood checks that each named point of r carries a value.
func wantGood(t *testing.T, r hearth.Reading, what string, names ...string) {
	t.Helper()
	for _, name := range names {
		if !r.Points[name].Good() {
			t.Errorf("%s: %s = %+v, want a value", what, name, r.Points[name])
		}
	}
}

// readsSince returns the reads the simulator logged after the first n.
func readsSince(s *sim.Simulator, n int) []sim.Read { return s.Reads()[n:] }

func refusedReads(rs []sim.Read) int {
	n := 0
	for _, r := range rs {
		if r.Exception != 0 {
			n++
		}
	}
	return n
}

func touches(r sim.Read, addr uint16) bool {
	return addr >= r.Addr && int(addr) < int(r.Addr)+int(r.Count)
}

// TestSunSpecRefusedRegisterIsLearned serves a device that refuses one
// register hearth does not need (model 103 TmpOt) with exception 2,
// inside the read that carries the temperatures. The first poll splits
// that read and learns the refused registers as a hole; every point comes
// out good, with no error; later polls never touch the hole, get no
// exception and never rediscover the device.
func TestSunSpecRefusedRegisterIsLearned(t *testing.T) {
	s, d := simDevice(t, sim.Config{})
	if err := s.Refuse(103, "TmpOt"); err != nil {
		t.Fatal(err)
	}
	tmpOt, _ := s.PointAddr(103, "TmpOt")
	marker := uint16(40000)

	r, err := d.Poll(context.Background(), time.Now)
	if err != nil {
		t.Fatalf("first poll: %v", err)
	}
	wantGood(t, r, "first poll", "temp_c", "ac_power_w", "soc_pct", "power_w")
	wantPoint(t, r, "temp_c", 25.0) // the simulator's ambient, with the refused register beside it
	holes := d.Holes()
	if !slices.ContainsFunc(holes, func(h Hole) bool { return h.From <= tmpOt && tmpOt <= h.To }) {
		t.Fatalf("holes %+v do not hold TmpOt (%d)", holes, tmpOt)
	}
	if n := refusedReads(s.Reads()); n < 2 {
		t.Errorf("the first poll saw %d refused reads; want the merged read and a part of its split", n)
	}

	mark := len(s.Reads())
	for i := range 10 {
		r, err := d.Poll(context.Background(), time.Now)
		if err != nil {
			t.Fatalf("poll %d after learning: %v", i+2, err)
		}
		// Tmp_SF, beyond the hole, scales temp_c: read on its own now.
		wantPoint(t, r, "temp_c", 25.0)
	}
	_, plan := d.PollPlan()
	later := readsSince(s, mark)
	if n := refusedReads(later); n != 0 {
		t.Errorf("%d refused reads in the 10 polls after learning, want 0", n)
	}
	for _, rd := range later {
		if touches(rd, tmpOt) {
			t.Errorf("a later read %d+%d covers the refused TmpOt (%d)", rd.Addr, rd.Count, tmpOt)
		}
		if touches(rd, marker) {
			t.Errorf("a later poll rediscovered the device (read %d+%d)", rd.Addr, rd.Count)
		}
	}
	if len(later) != 10*len(plan) {
		t.Errorf("10 polls made %d reads, want %d (%d a poll)", len(later), 10*len(plan), len(plan))
	}
}

// TestSunSpecRefusedPointIsNotImplemented refuses the registers of points
// hearth reads: a point's own (TmpCab: temp_c) and a scale factor
// (model 802 SoC_SF: soc_pct). Only the points that need them are
// not_implemented; the device stays up (no error) and its other points
// are good.
func TestSunSpecRefusedPointIsNotImplemented(t *testing.T) {
	s, d := simDevice(t, sim.Config{InitialSoC: 61})
	refuse(t, s, "103.TmpCab", "802.SoC_SF")
	for i := range 3 {
		r, err := d.Poll(context.Background(), time.Now)
		if err != nil {
			t.Fatalf("poll %d: %v", i+1, err)
		}
		wantPoint(t, r, "temp_c", hearth.QualityNotImplemented)
		wantGood(t, r, fmt.Sprintf("poll %d", i+1), "power_w", "cell_v_max", "ac_power_w", "ac_hz")
		// SoC comes from model 124's ChaState once 802's has no value.
		if i > 0 && !r.Points["soc_pct"].Good() {
			t.Errorf("poll %d: soc_pct %+v, want model 124's ChaState", i+1, r.Points["soc_pct"])
		}
	}
}

// TestSunSpecHolesKeptWithIdentity learns a hole with one device, then
// polls through a new SunSpecDevice (a restart) sharing the hole store:
// it makes no refused read at all. A device of another serial at the same
// name and address does not inherit the hole: its first poll reads across
// the registers the first one refused.
func TestSunSpecHolesKeptWithIdentity(t *testing.T) {
	store := &memHoles{}
	s, d := simDevice(t, sim.Config{Serial: "HOLE-A"}, WithHoleStore(store))
	s.Refuse(103, "TmpOt")
	tmpOt, _ := s.PointAddr(103, "TmpOt")
	poll(t, d)
	kept, ok, _ := store.LoadHoles("battery")
	if !ok || kept.Identity.Serial != "HOLE-A" || len(kept.Holes) == 0 {
		t.Fatalf("store holds %+v (ok %v), want the holes with serial HOLE-A", kept, ok)
	}

	mark := len(s.Reads())
	restarted := NewSunSpecDevice("battery", d.bus, 1, WithHoleStore(store))
	for range 3 {
		wantPoint(t, poll(t, restarted), "temp_c", 25.0)
	}
	if n := refusedReads(readsSince(s, mark)); n != 0 {
		t.Errorf("after a restart the device made %d refused reads, want 0: the holes were learned again", n)
	}

	other, d2 := simDevice(t, sim.Config{Serial: "HOLE-B"}, WithHoleStore(store))
	poll(t, d2)
	if !slices.ContainsFunc(other.Reads(), func(r sim.Read) bool { return touches(r, tmpOt) && r.Exception == 0 }) {
		t.Errorf("the device of serial HOLE-B never read across %d: it inherited HOLE-A's holes", tmpOt)
	}
	if kept, _, _ := store.LoadHoles("battery"); kept.Identity.Serial == "HOLE-B" && len(kept.Holes) > 0 {
		t.Errorf("HOLE-B, which refuses nothing, saved holes %+v", kept.Holes)
	}
}

// TestSunSpecExceptionIsNotALinkFailure answers a poll's reads with
// exception 6 (server busy): the points are comm_error for that poll, and
// the next poll reads them again without rediscovering the device.
func TestSunSpecExceptionIsNotALinkFailure(t *testing.T) {
	s, d := simDevice(t, sim.Config{})
	poll(t, d)
	_, plan := d.PollPlan()
	s.SetFault(sim.Fault{Exception: 6, Requests: len(plan)})
	r, err := d.Poll(context.Background(), time.Now)
	var exc *ExceptionError
	if !errors.As(err, &exc) || exc.Code != 6 {
		t.Fatalf("busy poll: err %v, want exception 6", err)
	}
	wantPoint(t, r, "soc_pct", hearth.QualityCommError)
	mark := len(s.Reads())
	wantPoint(t, poll(t, d), "temp_c", 25.0)
	for _, rd := range readsSince(s, mark) {
		if touches(rd, 40000) {
			t.Errorf("the poll after a busy answer rediscovered the device (read %d+%d)", rd.Addr, rd.Count)
		}
	}
}

// TestSunSpecRefusedDiscoveryBacksOff serves a device that refuses its
// SunSpec marker with exception 2 and polls it once a second for two
// minutes of a test clock: discovery is tried on a doubling back-off
// (never every poll), and the polls in between touch the link not at all.
func TestSunSpecRefusedDiscoveryBacksOff(t *testing.T) {
	s, d := simDevice(t, sim.Config{})
	s.RefuseRange(40000, 40001)
	clock := night
	now := func() time.Time { return clock }
	for range 120 {
		_, err := d.Poll(context.Background(), now)
		if err == nil {
			t.Fatal("a device refusing its marker polled without error")
		}
		clock = clock.Add(time.Second)
	}
	attempts := 0
	for _, rd := range s.Reads() {
		if rd.Addr == 40000 {
			attempts++
		}
	}
	// 2 s doubling to 1 min: at 0, 2, 6, 14, 30, 62 and 122 s at most.
	if attempts == 0 || attempts > 7 {
		t.Errorf("%d discovery attempts in 120 polls, want 1..7", attempts)
	}
	_, err := d.Poll(context.Background(), now)
	if !errors.Is(err, ErrDiscoveryBackoff) && attempts > 0 {
		t.Logf("last poll: %v", err)
	}
}

// TestSunSpecRefusalOfWhatReadBeforeRediscovers: a read that has read
// whole since discovery and is now refused may mean the map moved: the
// device is discovered again, and then the refusal is learned. Both plans
// are checked: a points' read (model 103 VA, bridged between Hz and WH,
// refused at the next poll) and a static read (model 103 TmpOt, bridged
// between the temperatures' scale factor and DCW's, refused at the next
// static refresh).
func TestSunSpecRefusalOfWhatReadBeforeRediscovers(t *testing.T) {
	for _, c := range []struct {
		what, point string
		step        time.Duration
	}{
		{"a points' read", "VA", time.Second},
		{"a static read", "TmpOt", StaticRefresh},
	} {
		t.Run(c.point, func(t *testing.T) {
			s, d := simDevice(t, sim.Config{})
			clock := night
			at := func() time.Time { return clock }
			pollAt := func(step time.Duration) (hearth.Reading, error) {
				clock = clock.Add(step)
				return d.Poll(context.Background(), at)
			}
			if _, err := pollAt(0); err != nil {
				t.Fatal(err)
			}
			addr, _ := s.PointAddr(103, c.point)
			specs, plan := d.PollPlan()
			if c.step == StaticRefresh {
				specs, plan = d.StaticPlan()
			}
			if !slices.ContainsFunc(plan, func(rq ReadRequest) bool { return addr >= rq.Addr && addr < rq.Addr+rq.Count }) {
				t.Fatalf("%s (%d) is in no read of the plan %+v over %+v: the test refuses nothing read before", c.point, addr, plan, specs)
			}
			if err := s.Refuse(103, c.point); err != nil {
				t.Fatal(err)
			}
			if _, err := pollAt(c.step); !illegalAddress(err) {
				t.Fatalf("poll after the map changed: %v, want exception 2", err)
			}
			if d.Models() != nil {
				t.Fatalf("the device kept its model chain after a refusal of %s that read before", c.what)
			}
			r, err := pollAt(time.Second)
			if err != nil {
				t.Fatalf("poll after rediscovery: %v", err)
			}
			wantPoint(t, r, "temp_c", 25.0)
			mark := len(s.Reads())
			for _, step := range []time.Duration{time.Second, StaticRefresh} {
				if _, err := pollAt(step); err != nil {
					t.Fatalf("poll after relearning: %v", err)
				}
			}
			if n := refusedReads(readsSince(s, mark)); n != 0 {
				t.Errorf("%d refused reads after relearning", n)
			}
		})
	}
}

// TestSunSpecRefusedRegisterInIdentityAndRatings refuses a register of
// model 1 (Opt, beside the serial) and one of model 802 (a rating's
// neighbour) that discovery reads whole: the device is still discovered,
// with its identity, and polled.
func TestSunSpecRefusedRegisterInIdentityAndRatings(t *testing.T) {
	s, d := simDevice(t, sim.Config{Serial: "REFUSE-ID"})
	refuse(t, s, "1.Opt", "802.AHRtg")
	r := poll(t, d)
	if id := d.Identity(); id.Serial != "REFUSE-ID" || id.Manufacturer == "" {
		t.Errorf("identity %+v, want serial REFUSE-ID and a manufacturer", id)
	}
	if !r.Points["soc_pct"].Good() {
		t.Errorf("soc_pct %+v", r.Points["soc_pct"])
	}
}

// TestProfileRefusedRegisterIsLearned: a device read through a fixed
// register map (the hearthsim profile) that refuses TmpOt, bridged by the
// plan, and TmpCab, a point of the map: the first poll splits the refused
// read, only temp_c is not_implemented, and later polls make no refused
// read.
func TestProfileRefusedRegisterIsLearned(t *testing.T) {
	s := sim.New(sim.Config{Now: func() time.Time { return night }})
	refuse(t, s, "103.TmpOt", "103.TmpCab")
	p, err := EmbeddedProfile("hearthsim")
	if err != nil {
		t.Fatal(err)
	}
	d := NewProfileDevice("battery", openBus(t, serveSims(t, TransportTCP, s)), 1, p)
	for i := range 4 {
		r, err := d.Poll(context.Background(), time.Now)
		if err != nil {
			t.Fatalf("poll %d: %v", i+1, err)
		}
		wantPoint(t, r, "temp_c", hearth.QualityNotImplemented)
		wantGood(t, r, fmt.Sprintf("poll %d", i+1), "soc_pct", "power_w", "ac_power_w", "cell_v_max")
		if i == 0 {
			if refusedReads(s.Reads()) == 0 {
				t.Fatal("the first poll made no refused read: the test refuses nothing the map reads")
			}
			mark := len(s.Reads())
			t.Cleanup(func() {
				if n := refusedReads(readsSince(s, mark)); n != 0 {
					t.Errorf("%d refused reads after the first poll, want 0", n)
				}
			})
		}
	}
}

// TestSunSpecRefusedScaleFactorIsAHole refuses a scale factor (model 103
// Tmp_SF, which scales temp_c and temp_sink_c), a static register read at
// discovery and every StaticRefresh: it is learned as a hole at the
// first poll, its points are not_implemented while every other point
// reads, no poll fails, and neither the static refreshes nor the polls
// ask for it again.
func TestSunSpecRefusedScaleFactorIsAHole(t *testing.T) {
	s, d := simDevice(t, sim.Config{InitialSoC: 55})
	refuse(t, s, "103.Tmp_SF")
	sf, _ := s.PointAddr(103, "Tmp_SF")
	clock := night
	var mark int
	for i, step := range []time.Duration{0, time.Second, StaticRefresh, time.Second, StaticRefresh} {
		clock = clock.Add(step)
		r, err := d.Poll(context.Background(), func() time.Time { return clock })
		if err != nil {
			t.Fatalf("poll %d: %v", i+1, err)
		}
		wantPoint(t, r, "temp_c", hearth.QualityNotImplemented)
		wantPoint(t, r, "temp_sink_c", hearth.QualityNotImplemented)
		wantPoint(t, r, "soc_pct", 55.0)
		wantGood(t, r, fmt.Sprintf("poll %d", i+1), "power_w", "ac_power_w", "ac_hz", "cell_v_max")
		if i == 0 {
			if refusedReads(s.Reads()) == 0 {
				t.Fatal("the first poll made no refused read: the test refuses nothing the device reads")
			}
			mark = len(s.Reads())
		}
	}
	holes := d.Holes()
	if !slices.ContainsFunc(holes, func(h Hole) bool { return h.From <= sf && sf <= h.To }) {
		t.Errorf("holes %+v do not hold Tmp_SF (%d)", holes, sf)
	}
	later := readsSince(s, mark)
	if n := refusedReads(later); n != 0 {
		t.Errorf("%d refused reads after the first poll, want 0", n)
	}
	for _, rd := range later {
		if touches(rd, sf) {
			t.Errorf("a later read %d+%d asks for the refused Tmp_SF (%d)", rd.Addr, rd.Count, sf)
		}
	}
}
