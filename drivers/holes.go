package drivers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Registers a device refuses. A device may answer a read that covers a
// register its firmware does not serve with exception 2 (illegal data
// address), even when the read was only bridging a gap between two
// points hearth needs. Such a read is split until each part either reads
// or is one point's own registers; what the device refused is learned as
// a hole, which the planner never bridges again, and only the points
// that need a refused register are not_implemented. An exception is an
// answer, not a link failure: it never makes a device rediscover its map
// by itself. A SunSpec device reads both its plans this way, the points'
// every poll and the static registers' (scale factors, ratings, model 1's
// strings) on their schedule, and its identity at discovery.

// HoleStore keeps, across restarts, the registers each device refused,
// with the identity of the device that refused them. The agent gives one
// to each SunSpec device (WithHoleStore); without one, holes are
// learned again after a restart.
type HoleStore interface {
	// LoadHoles returns what was saved for the device's name; ok is
	// false when nothing was.
	LoadHoles(device string) (h LearnedHoles, ok bool, err error)
	// SaveHoles replaces what is kept for the device's name.
	SaveHoles(device string, h LearnedHoles) error
}

// LearnedHoles are the registers one device refused with exception 2, and
// the identity it reported then (model 1: manufacturer, model, serial,
// firmware). Another device at the same address, or the same one after a
// firmware update, does not inherit them.
type LearnedHoles struct {
	Identity Identity  `json:"identity"`
	Holes    []Hole    `json:"holes"`
	Learned  time.Time `json:"learned"` // when the last was learned
}

// HoleTTL is how long learned holes are trusted: after it they are
// dropped and learned again (one refused read and its split), in case a
// device that refused a register while busy serves it now.
const HoleTTL = 7 * 24 * time.Hour

// WithHoleStore keeps the device's learned holes in s, by the device's
// name and identity.
func WithHoleStore(s HoleStore) SunSpecOption {
	return func(d *SunSpecDevice) { d.holeStore = s }
}

// illegalAddress reports whether err is a unit's exception 2.
func illegalAddress(err error) bool {
	var exc *ExceptionError
	return errors.As(err, &exc) && exc.Code == 2
}

// isException reports whether err is an exception answer.
func isException(err error) bool {
	var exc *ExceptionError
	return errors.As(err, &exc)
}

// splitRead is what one planned read, split where the device refused it,
// gave.
type splitRead struct {
	regs  map[int][]uint16 // each point read, by its index in specs: its own registers
	runs  []regRun         // every read that answered, gaps bridged included
	holes []Hole           // registers learned as refused
	err   error            // the first failure that was not exception 2
}

// regRun is registers read from addr on.
type regRun struct {
	addr uint16
	regs []uint16
}

// own puts the points' own registers into vals, by address (specs are
// the points the read was planned over).
func (s splitRead) own(specs []PointSpec, vals map[uint16]uint16) {
	for i, regs := range s.regs {
		for k, v := range regs {
			vals[specs[i].Address+uint16(k)] = v
		}
	}
}

// all puts every register read into vals, by address: the points' own
// and the gaps bridged between them.
func (s splitRead) all(vals map[uint16]uint16) {
	for _, r := range s.runs {
		for k, v := range r.regs {
			vals[r.addr+uint16(k)] = v
		}
	}
}

// add keeps regs, read from addr on: the run, and the own registers of
// the points pts (indexes in specs) it carries.
func (s *splitRead) add(specs []PointSpec, pts []int, addr uint16, regs []uint16) {
	s.runs = append(s.runs, regRun{addr, regs})
	for _, i := range pts {
		off := specs[i].Address - addr
		s.regs[i] = regs[off : off+specs[i].Size()]
	}
}

// readSplitting reads rq; when the unit refuses it with exception 2, it
// halves the request's points and reads each half on its own (a part's
// read spans its first point to its last), down to single points. A gap
// between two halves that each read whole is a hole: the refused register
// lies in it. A single point refused is a hole too. Any other failure
// ends the split and is returned in err. keep are points other reads
// carry (a SunSpec device's other plan): a gap's hole is cut around their
// registers, which their own reads learn if the device refuses them.
func readSplitting(ctx context.Context, bus *Bus, unit uint8, specs []PointSpec, rq ReadRequest, keep ...[]PointSpec) splitRead {
	out := splitRead{regs: map[int][]uint16{}}
	pts := slices.Clone(rq.Points)
	slices.SortStableFunc(pts, func(a, b int) int { return int(specs[a].Address) - int(specs[b].Address) })
	var read func(pts []int, addr, count uint16) bool
	read = func(pts []int, addr, count uint16) bool {
		if out.err != nil {
			return false
		}
		regs, err := bus.Read(ctx, unit, rq.Table, addr, count)
		switch {
		case err == nil:
			out.add(specs, pts, addr, regs)
			return true
		case !illegalAddress(err):
			out.err = err
			return false
		case len(pts) == 1:
			out.holes = append(out.holes, Hole{Table: rq.Table, From: addr, To: addr + count - 1})
			return false
		}
		left, right := pts[:len(pts)/2], pts[len(pts)/2:]
		la, lc := span(specs, left)
		ra, rc := span(specs, right)
		lok := read(left, la, lc)
		rok := read(right, ra, rc)
		if lok && rok && int(la)+int(lc) < int(ra) {
			out.holes = append(out.holes, cutHole(Hole{Table: rq.Table, From: la + lc, To: ra - 1}, keep)...)
		}
		return false
	}
	read(pts, rq.Addr, rq.Count)
	return out
}

// cutHole returns what is left of hole h once the registers of the
// points in keep are taken out of it.
func cutHole(h Hole, keep [][]PointSpec) []Hole {
	left := []Hole{h}
	for _, list := range keep {
		for _, p := range list {
			if p.Table != h.Table || p.Size() == 0 {
				continue
			}
			from, to := int(p.Address), int(p.Address)+int(p.Size())-1
			var next []Hole
			for _, l := range left {
				if to < int(l.From) || from > int(l.To) {
					next = append(next, l)
					continue
				}
				if from > int(l.From) {
					next = append(next, Hole{Table: l.Table, From: l.From, To: uint16(from - 1)})
				}
				if to < int(l.To) {
					next = append(next, Hole{Table: l.Table, From: uint16(to + 1), To: l.To})
				}
			}
			left = next
		}
	}
	return left
}

// span returns the registers that cover points pts (sorted by address).
func span(specs []PointSpec, pts []int) (addr, count uint16) {
	addr = specs[pts[0]].Address
	end := int(addr)
	for _, i := range pts {
		end = max(end, int(specs[i].Address)+int(specs[i].Size()))
	}
	return addr, uint16(end - int(addr))
}

// inHoles reports whether any register of p lies in a hole.
func inHoles(holes []Hole, p PointSpec) bool {
	from, to := int(p.Address), int(p.Address)+int(p.Size())-1
	return slices.ContainsFunc(holes, func(h Hole) bool {
		return h.Table == p.Table && from <= int(h.To) && to >= int(h.From)
	})
}

// readPlanned makes one planned read rq over specs (the points' plan or
// the statics'). A read that failed with exception 2 the first time since
// the device was discovered is split, and what it teaches is learned; one
// that read before and is now refused may mean the map changed
// (rediscover is true), as does any failure that is not an exception.
func (d *SunSpecDevice) readPlanned(ctx context.Context, specs []PointSpec, rq ReadRequest, now time.Time) (got splitRead, rediscover bool) {
	key := [2]uint16{rq.Addr, rq.Count}
	if d.readOK[key] {
		regs, err := d.bus.Read(ctx, d.unit, rq.Table, rq.Addr, rq.Count)
		if err != nil {
			return splitRead{err: err}, !isException(err) || illegalAddress(err)
		}
		got = splitRead{regs: map[int][]uint16{}}
		got.add(specs, rq.Points, rq.Addr, regs)
		return got, false
	}
	got = readSplitting(ctx, d.bus, d.unit, specs, rq, d.specs, d.statics)
	if got.err == nil && len(got.holes) == 0 {
		if d.readOK == nil {
			d.readOK = map[[2]uint16]bool{}
		}
		d.readOK[key] = true
	}
	if len(got.holes) > 0 {
		d.learn(got.holes, now)
	}
	return got, got.err != nil && !isException(got.err)
}

// learn adds holes to the device's and saves them with its identity.
func (d *SunSpecDevice) learn(holes []Hole, now time.Time) {
	for _, h := range holes {
		if !slices.Contains(d.holes, h) {
			d.holes = append(d.holes, h)
		}
	}
	d.replan = true
	if d.holeStore != nil {
		// The store reports its own failures; the holes stay learned for
		// the run.
		_ = d.holeStore.SaveHoles(d.name, LearnedHoles{Identity: d.Identity(), Holes: slices.Clone(d.holes), Learned: now})
	}
}

// keptHoles returns the holes kept for this device's name when they were
// learned within HoleTTL, else none. They are the device's only when it
// reports the identity they were learned with (discover checks).
func (d *SunSpecDevice) keptHoles(now time.Time) LearnedHoles {
	if d.holeStore == nil {
		return LearnedHoles{}
	}
	h, ok, err := d.holeStore.LoadHoles(d.name)
	if !ok || err != nil || now.Sub(h.Learned) >= HoleTTL || h.Learned.After(now.Add(HoleTTL)) {
		return LearnedHoles{}
	}
	return h
}

// Holes returns the registers the device refused, as learned or loaded
// (poll goroutine only).
func (d *SunSpecDevice) Holes() []Hole { return slices.Clone(d.holes) }

// Discovery back-off for a device that answers but cannot be discovered
// (it refuses the marker or the model chain with exceptions, or has no
// SunSpec map): the bus only backs off from a unit that does not answer.
const (
	discoveryBackoffBase = 2 * time.Second
	discoveryBackoffMax  = time.Minute
)

// ErrDiscoveryBackoff is returned by Poll, without touching the link,
// while a device whose discovery failed with an answer waits for its
// next attempt.
var ErrDiscoveryBackoff = errors.New("SunSpec discovery failed; next attempt pending")

// discoveryDue reports whether discovery may be tried at now; otherwise
// it returns the error Poll reports meanwhile.
func (d *SunSpecDevice) discoveryDue(now time.Time) error {
	if d.discoveryFailed == 0 || !now.Before(d.nextDiscovery) {
		return nil
	}
	return fmt.Errorf("%w at %s (last: %w)", ErrDiscoveryBackoff, d.nextDiscovery.Format(time.RFC3339), d.discoveryErr)
}

// discovered records the outcome of a discovery attempt at now. A failure
// the device answered (an exception, no marker) puts the next attempt off,
// doubling up to discoveryBackoffMax; one it did not answer is the bus's
// to pace.
func (d *SunSpecDevice) discovered(err error, now time.Time) {
	if err == nil || !(isException(err) || errors.Is(err, ErrNoSunSpec)) {
		d.discoveryFailed, d.discoveryErr = 0, nil
		return
	}
	d.discoveryFailed++
	wait := min(discoveryBackoffBase<<min(d.discoveryFailed-1, 16), discoveryBackoffMax)
	d.nextDiscovery, d.discoveryErr = now.Add(wait), err
}
