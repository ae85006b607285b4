package drivers

import (
	"slices"
	"sort"
)

// ReadRequest is one read the planner asks for: Count registers of Table
// from Addr, covering Points (indexes into the planned slice).
type ReadRequest struct {
	Table  Table
	Addr   uint16
	Count  uint16
	Points []int
}

// Plan merges points into the reads that take the least bus time: each at
// most MaxReadRegisters long, bridging a gap between two points only when
// it holds no hole, is at most maxGap registers (what the profile allows)
// and costs less than a request of its own (BridgeGap). Points are read
// whole; a point longer than MaxReadRegisters cannot be planned and is
// left out, and so is a write-only point (the device does not read it
// back). Requests come sorted by table and address.
//
// Each gap is decided on its own: a request costs a fixed overhead and
// two characters a register, so bridging a gap of g registers costs 2g
// characters against the overhead of a new request, whatever the other
// gaps are. Only the 125-register limit couples the decisions; OptimalCost
// gives the true optimum to compare with.
func Plan(points []PointSpec, holes []Hole, maxGap uint16) []ReadRequest {
	return merge(points, holes, min(maxGap, BridgeGap))
}

// planAround is Plan for a device that refuses the registers of holes
// (learned with exception 2, or a profile's own): a point with a register
// in a hole is left out, whatever its type (it is not_implemented), and no
// read bridges a hole. The plan's Points index points as given.
func planAround(points []PointSpec, holes []Hole, maxGap uint16) []ReadRequest {
	plannable := slices.Clone(points)
	for i := range plannable {
		if inHoles(holes, plannable[i]) {
			// No registers: the planner leaves the point out. A string's
			// size is its Length; any other type's is fixed by the type.
			plannable[i].Type, plannable[i].Length = "string", 0
		}
	}
	return Plan(plannable, holes, maxGap)
}

// merge plans reads bridging every gap of at most maxGap registers that
// holds no hole.
func merge(points []PointSpec, holes []Hole, maxGap uint16) []ReadRequest {
	idx := make([]int, 0, len(points))
	for i, p := range points {
		if p.Size() > 0 && p.Size() <= MaxReadRegisters && !p.WriteOnly {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool {
		pa, pb := points[idx[a]], points[idx[b]]
		if pa.Table != pb.Table {
			return pa.Table < pb.Table
		}
		return pa.Address < pb.Address
	})
	inHole := func(t Table, from, to int) bool { // registers from..to inclusive
		for _, h := range holes {
			if h.Table == t && from <= int(h.To) && to >= int(h.From) {
				return true
			}
		}
		return false
	}
	var reqs []ReadRequest
	for _, i := range idx {
		p := points[i]
		start, end := int(p.Address), int(p.Address)+int(p.Size()) // end exclusive
		if n := len(reqs); n > 0 {
			r := &reqs[n-1]
			rEnd := int(r.Addr) + int(r.Count)
			if r.Table == p.Table && start < rEnd {
				// Overlaps what is read already (a point sharing registers).
				if end > rEnd && end-int(r.Addr) <= MaxReadRegisters {
					r.Count = uint16(end - int(r.Addr))
				}
				if end-int(r.Addr) <= MaxReadRegisters {
					r.Points = append(r.Points, i)
					continue
				}
			} else if r.Table == p.Table && start-rEnd <= int(maxGap) && end-int(r.Addr) <= MaxReadRegisters &&
				(start == rEnd || !inHole(p.Table, rEnd, start-1)) {
				r.Count = uint16(end - int(r.Addr))
				r.Points = append(r.Points, i)
				continue
			}
		}
		reqs = append(reqs, ReadRequest{Table: p.Table, Addr: p.Address, Count: p.Size(), Points: []int{i}})
	}
	return reqs
}

// RTU cost model at a baud rate: every character is 11 bits, and every
// frame is followed by 3.5 characters of silence.
const (
	rtuReadRequestChars  = 8 // unit, function, address, count, CRC
	rtuReadResponseChars = 5 // unit, function, byte count, CRC; plus 2 per register
	rtuGapChars          = 3.5
)

// BridgeGap is the largest gap worth bridging on an RTU line: a new
// request costs its frames and their silences (20 characters), a bridged
// register two characters.
const BridgeGap = (rtuReadRequestChars + rtuReadResponseChars + 2*rtuGapChars) / 2

// ReadChars returns the characters (including the two inter-frame gaps) a
// read of count registers puts on an RTU line.
func ReadChars(count int) float64 {
	return rtuReadRequestChars + rtuReadResponseChars + float64(2*count) + 2*rtuGapChars
}

// PlanCost is what a plan costs on an RTU line.
type PlanCost struct {
	Requests     int     // reads per poll cycle
	Registers    int     // registers read, bridged gaps included
	Chars        float64 // on the wire, gaps included
	MinRequests  int     // fewest reads that could carry the points' registers
	MinRegisters int     // registers the points need
	MinChars     float64
}

// Cost returns a plan's cost and the theoretical minimum for its points: a
// lower bound no plan can beat, the fewest reads that can cover the points
// at all (every gap bridged, holes ignored) carrying only the points' own
// registers.
func Cost(points []PointSpec, reqs []ReadRequest) PlanCost {
	var c PlanCost
	for _, r := range reqs {
		c.Requests++
		c.Registers += int(r.Count)
		c.Chars += ReadChars(int(r.Count))
	}
	need := map[Table]map[uint16]bool{}
	for _, p := range points {
		if p.WriteOnly {
			continue // never read
		}
		if need[p.Table] == nil {
			need[p.Table] = map[uint16]bool{}
		}
		for a := range p.Size() {
			need[p.Table][p.Address+a] = true
		}
	}
	for _, regs := range need {
		c.MinRegisters += len(regs)
	}
	c.MinRequests = len(merge(points, nil, 0xFFFF))
	c.MinChars = float64(c.MinRequests)*ReadChars(0) + float64(2*c.MinRegisters)
	return c
}

// OptimalCost returns the characters of the cheapest plan there is for
// the points that are read (write-only ones never are): the exact optimum over every way of cutting them into reads of
// at most MaxReadRegisters that bridge no hole, found by dynamic
// programming over the points in address order (each table on its own).
func OptimalCost(points []PointSpec, holes []Hole) float64 {
	total := 0.0
	for _, t := range []Table{Holding, Input} {
		var ps []PointSpec
		for _, p := range points {
			if p.Table == t && p.Size() > 0 && p.Size() <= MaxReadRegisters && !p.WriteOnly {
				ps = append(ps, p)
			}
		}
		sort.SliceStable(ps, func(a, b int) bool { return ps[a].Address < ps[b].Address })
		n := len(ps)
		if n == 0 {
			continue
		}
		// best[i]: cheapest cost of the first i points.
		best := make([]float64, n+1)
		for i := 1; i <= n; i++ {
			best[i] = -1
			end := 0
			for j := i; j >= 1; j-- { // points j-1 .. i-1 in one read
				end = max(end, int(ps[j-1].Address)+int(ps[j-1].Size()))
				start := int(ps[j-1].Address)
				if end-start > MaxReadRegisters {
					break
				}
				if j < i && holeBetween(holes, t, ps[j-1:i]) {
					break
				}
				c := best[j-1] + ReadChars(end-start)
				if best[i] < 0 || c < best[i] {
					best[i] = c
				}
			}
		}
		total += best[n]
	}
	return total
}

// holeBetween reports whether a hole lies in a gap between the points
// (sorted by address) of one read.
func holeBetween(holes []Hole, t Table, ps []PointSpec) bool {
	end := int(ps[0].Address) + int(ps[0].Size())
	for _, p := range ps[1:] {
		if int(p.Address) > end {
			for _, h := range holes {
				if h.Table == t && end <= int(h.To) && int(p.Address)-1 >= int(h.From) {
					return true
				}
			}
		}
		end = max(end, int(p.Address)+int(p.Size()))
	}
	return false
}
