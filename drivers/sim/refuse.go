package sim

import (
	"fmt"
	"slices"
)

// Read is one read request the simulator received: Count registers from
// Addr, and the exception it was answered with (0: the registers).
type Read struct {
	Addr      uint16
	Count     uint16
	Exception byte
}

// maxReadLog is how many reads the read log keeps.
const maxReadLog = 10000

// Refuse makes the simulator answer any read or write that touches a
// point's registers (model id and SunSpec point name) with exception 2,
// illegal data address, as a device refuses a register its firmware does
// not serve, while the rest of its map reads as before. It lasts until
// ClearRefused.
func (s *Simulator) Refuse(model uint16, point string) error {
	l, ok := s.lay.points[key{model, point}]
	if !ok {
		return fmt.Errorf("model %d has no point %q here", model, point)
	}
	s.RefuseRange(l.addr, l.addr+l.def.Size-1)
	return nil
}

// RefuseRange refuses registers from..to (inclusive) as Refuse does.
func (s *Simulator) RefuseRange(from, to uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = append(s.refused, [2]uint16{min(from, to), max(from, to)})
}

// ClearRefused serves every register again.
func (s *Simulator) ClearRefused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = nil
}

// refusedLocked reports whether a request for n registers at addr
// touches a refused register. Callers hold s.mu.
func (s *Simulator) refusedLocked(addr, n uint16) bool {
	end := int(addr) + int(n) - 1
	return slices.ContainsFunc(s.refused, func(r [2]uint16) bool { return int(addr) <= int(r[1]) && end >= int(r[0]) })
}

// logReadLocked records a read request. Callers hold s.mu.
func (s *Simulator) logReadLocked(addr, n uint16, exc byte) {
	s.reads = appendBounded(s.reads, Read{Addr: addr, Count: n, Exception: exc}, maxReadLog)
}

// Reads returns a copy of the read log, oldest first: every read request
// the register map was asked (not those an injected fault swallowed or
// answered). The log keeps the latest 10000.
func (s *Simulator) Reads() []Read {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reads)
}
