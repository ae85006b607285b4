package sim

import (
	"context"
	"encoding/binary"
	"math"
	"slices"
	"time"
)

// Modbus function codes served.
const (
	fcReadHolding   = 0x03
	fcReadInput     = 0x04
	fcWriteSingle   = 0x06
	fcWriteMultiple = 0x10
)

// Modbus exception codes.
const (
	ExceptionIllegalFunction    byte = 0x01
	ExceptionIllegalDataAddress byte = 0x02
	ExceptionIllegalDataValue   byte = 0x03
	ExceptionServerFailure      byte = 0x04
	ExceptionServerBusy         byte = 0x06
)

// Protocol limits on register counts (Modbus Application Protocol v1.1b3).
const (
	maxReadRegs  = 125
	maxWriteRegs = 123
)

// action is what a transport does with the outcome of a request.
type action int

const (
	actRespond action = iota
	actSilent         // send nothing
	actDrop           // close the connection
	actCorrupt        // send the response in a damaged frame
)

// Handle executes one request PDU (function code and data, no framing)
// addressed to unit and returns the response PDU. ok is false when the
// simulator would not answer: another unit id, an empty PDU, or an
// injected NoResponse or Drop fault. Handle is the transport-independent
// core; an injected Latency is slept here, and Corrupt, which concerns
// framing, is ignored.
func (s *Simulator) Handle(unit uint8, pdu []byte) (resp []byte, ok bool) {
	resp, act := s.serve(context.Background(), unit, pdu)
	return resp, act == actRespond || act == actCorrupt
}

// serve applies faults and executes a request. ctx cuts an injected
// latency short.
func (s *Simulator) serve(ctx context.Context, unit uint8, pdu []byte) ([]byte, action) {
	if unit != s.cfg.UnitID || len(pdu) == 0 {
		return nil, actSilent
	}
	f := s.takeFault()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, actDrop
		}
	}
	switch {
	case f.Drop:
		return nil, actDrop
	case f.NoResponse:
		return nil, actSilent
	case f.Exception != 0:
		return exception(pdu[0], f.Exception), actRespond
	}
	resp := s.execute(unit, pdu)
	if f.Corrupt {
		return resp, actCorrupt
	}
	return resp, actRespond
}

func exception(fc, code byte) []byte { return []byte{fc | 0x80, code} }

// execute runs a request against the register map.
func (s *Simulator) execute(unit uint8, pdu []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.step()
	return execPDU(pdu, s.read, func(fc byte, addr uint16, vals []uint16) byte {
		return s.write(now, unit, fc, addr, vals)
	})
}

// execPDU decodes a request PDU for function codes 3, 4, 6 and 16, runs it
// with read or write, and encodes the response. Checks follow the Modbus
// order: function code, then quantity and framing (0x03) here, then
// address and value in read and write. read returns n registers at addr,
// or the exception code that refuses them; write applies vals at addr,
// all or nothing, and returns 0 or the exception code that refused them.
func execPDU(pdu []byte, read func(fc byte, addr, n uint16) ([]uint16, byte), write func(fc byte, addr uint16, vals []uint16) byte) []byte {
	fc := pdu[0]
	be := binary.BigEndian
	switch fc {
	case fcReadHolding, fcReadInput:
		if len(pdu) != 5 {
			return exception(fc, ExceptionIllegalDataValue)
		}
		addr, n := be.Uint16(pdu[1:]), be.Uint16(pdu[3:])
		if n < 1 || n > maxReadRegs {
			return exception(fc, ExceptionIllegalDataValue)
		}
		regs, code := read(fc, addr, n)
		if code != 0 {
			return exception(fc, code)
		}
		resp := make([]byte, 2, 2+2*int(n))
		resp[0], resp[1] = fc, byte(2*n)
		for _, r := range regs {
			resp = be.AppendUint16(resp, r)
		}
		return resp

	case fcWriteSingle:
		if len(pdu) != 5 {
			return exception(fc, ExceptionIllegalDataValue)
		}
		addr := be.Uint16(pdu[1:])
		if code := write(fc, addr, []uint16{be.Uint16(pdu[3:])}); code != 0 {
			return exception(fc, code)
		}
		return append([]byte(nil), pdu...)

	case fcWriteMultiple:
		if len(pdu) < 6 {
			return exception(fc, ExceptionIllegalDataValue)
		}
		addr, n, bc := be.Uint16(pdu[1:]), be.Uint16(pdu[3:]), int(pdu[5])
		if n < 1 || n > maxWriteRegs || bc != 2*int(n) || len(pdu) != 6+bc {
			return exception(fc, ExceptionIllegalDataValue)
		}
		vals := make([]uint16, n)
		for i := range vals {
			vals[i] = be.Uint16(pdu[6+2*i:])
		}
		if code := write(fc, addr, vals); code != 0 {
			return exception(fc, code)
		}
		return []byte{fc, pdu[1], pdu[2], pdu[3], pdu[4]}
	}
	return exception(fc, ExceptionIllegalFunction)
}

// read returns n registers at addr as served (raw values in place of the
// true ones), or exception 2 when the map does not hold them all or one
// is refused; it logs the request. Callers hold s.mu.
func (s *Simulator) read(_ byte, addr, n uint16) ([]uint16, byte) {
	if !s.lay.mapped(addr, n) || s.refusedLocked(addr, n) {
		s.logReadLocked(addr, n, ExceptionIllegalDataAddress)
		return nil, ExceptionIllegalDataAddress
	}
	s.logReadLocked(addr, n, 0)
	regs := slices.Clone(s.regs[addr-s.lay.base : addr-s.lay.base+n])
	for i := range regs {
		if v, ok := s.raw[addr+uint16(i)]; ok {
			regs[i] = v
		}
	}
	return regs, 0
}

// write checks and applies a write of vals at addr, all or nothing, logs
// it, and returns 0 or the exception code it was refused with. Callers hold
// s.mu.
func (s *Simulator) write(now time.Time, unit uint8, fc byte, addr uint16, vals []uint16) byte {
	code, touched124 := s.checkWrite(addr, vals)
	s.writes = appendBounded(s.writes, Write{Time: now, Unit: unit, Func: fc, Addr: addr,
		Values: append([]uint16(nil), vals...), Exception: code}, maxWriteLog)
	if code != 0 {
		s.log.Debug("write refused", "addr", addr, "n", len(vals), "exception", code)
		return code
	}
	copy(s.regs[addr-s.lay.base:], vals)
	if touched124 {
		s.lastCtl = now
		s.reverted = false
		s.flash++
	}
	s.log.Debug("write", "addr", addr, "values", vals)
	s.instant(now)
	s.render()
	return 0
}

// checkWrite returns the exception code for a write, and whether it
// touches model 124.
func (s *Simulator) checkWrite(addr uint16, vals []uint16) (byte, bool) {
	if !s.lay.mapped(addr, uint16(len(vals))) || s.refusedLocked(addr, uint16(len(vals))) {
		return ExceptionIllegalDataAddress, false
	}
	touched124 := false
	valid := true
	for i, v := range vals {
		a := addr + uint16(i)
		k, ok := s.writableAt(a)
		if !ok {
			return ExceptionIllegalDataAddress, false
		}
		touched124 = touched124 || k.model == 124
		r := writable[k]
		if k.model == 124 && (k.name == "OutWRte" || k.name == "InWRte") {
			// ±100 % at the scale factor in force, within int16.
			n := rateLimit(int16(s.reg(124, "InOutWRte_SF")[0]))
			r = [2]int{-n, n}
		}
		x := int(v)
		if s.loc(k.model, k.name).def.Type == "int16" {
			x = int(int16(v))
		}
		if x < r[0] || x > r[1] {
			valid = false
		}
	}
	if !valid {
		return ExceptionIllegalDataValue, false
	}
	return 0, touched124
}

func (s *Simulator) writableAt(addr uint16) (key, bool) {
	k, ok := s.lay.writable[addr]
	return k, ok
}

// rateLimit is the largest raw OutWRte or InWRte at scale factor sf:
// 100 %, or 32767 when 100 % does not fit an int16.
func rateLimit(sf int16) int {
	n := 100.0
	for range max(0, -int(sf)) {
		n *= 10
	}
	for range max(0, int(sf)) {
		n /= 10
	}
	return int(min(n, math.MaxInt16))
}
