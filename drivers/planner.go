package drivers

import (
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

// Plan merges points into the fewest reads: each at most MaxReadRegisters
// long, bridging a gap between two points only when it is at most maxGap
// registers and holds no hole. Points are read whole; a point longer than
// MaxReadRegisters cannot be planned and is left out. Requests come
// sorted by table and address.
func Plan(points []PointSpec, holes []Hole, maxGap uint16) []ReadRequest {
	idx := make([]int, 0, len(points))
	for i, p := range points {
		if p.Size() > 0 && p.Size() <= MaxReadRegisters {
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
	c.MinRequests = len(Plan(points, nil, 0xFFFF))
	c.MinChars = float64(c.MinRequests)*ReadChars(0) + float64(2*c.MinRegisters)
	return c
}
