// Package rtu holds Modbus RTU framing shared by the client transports in
// package drivers and the simulator's RTU front end: the CRC, the length of
// a frame as told by its first bytes, and a reader that takes exactly one
// frame off a byte stream. It has no state and knows nothing of devices.
//
// Reference: MODBUS over Serial Line, Specification and Implementation
// Guide V1.02, sections 2.5.1 (RTU framing) and 6.2 (CRC).
package rtu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Frame sizes.
const (
	MinFrame = 4   // unit, function, CRC
	MaxFrame = 256 // unit, function, up to 252 data bytes, CRC
)

// Errors a frame can fail with. Callers match them with errors.Is.
var (
	ErrCRC      = errors.New("rtu: bad CRC")
	ErrTooShort = errors.New("rtu: frame too short")
	ErrTooLong  = errors.New("rtu: frame too long")
	ErrUnknown  = errors.New("rtu: function code with no known frame length")
)

// CRC returns the Modbus CRC-16 (polynomial 0xA001, initial 0xFFFF) of b.
// On the wire it goes low byte first.
func CRC(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// Encode returns the RTU frame for pdu (function code and data) to unit.
func Encode(unit byte, pdu []byte) []byte {
	f := make([]byte, 0, len(pdu)+3)
	f = append(f, unit)
	f = append(f, pdu...)
	crc := CRC(f)
	return append(f, byte(crc), byte(crc>>8))
}

// Decode checks a whole frame's size and CRC and returns its unit and PDU.
// The PDU aliases frame.
func Decode(frame []byte) (unit byte, pdu []byte, err error) {
	if len(frame) < MinFrame {
		return 0, nil, ErrTooShort
	}
	if len(frame) > MaxFrame {
		return 0, nil, ErrTooLong
	}
	n := len(frame) - 2
	if CRC(frame[:n]) != binary.LittleEndian.Uint16(frame[n:]) {
		return 0, nil, ErrCRC
	}
	return frame[0], frame[1:n], nil
}

// lenFunc tells a frame's total length from its first bytes. need is how
// many bytes it must see first; total is only valid when need ≤ len(head).
type lenFunc func(head []byte) (need, total int, err error)

// fixed is a frame of n bytes whatever it holds.
func fixed(n int) lenFunc {
	return func([]byte) (int, int, error) { return 2, n, nil }
}

// counted is a frame whose byte at off counts the data bytes that follow,
// with extra bytes (CRC) after them.
func counted(off, extra int) lenFunc {
	return func(head []byte) (int, int, error) {
		if len(head) <= off {
			return off + 1, 0, nil
		}
		return off + 1, off + 1 + int(head[off]) + extra, nil
	}
}

// ResponseLen tells the length of a response frame from its first bytes.
// need is how many bytes it must have seen; when len(head) ≥ need, total is
// the frame's whole length. Exception responses (function | 0x80) are five
// bytes long.
func ResponseLen(head []byte) (need, total int, err error) {
	if len(head) < 2 {
		return 2, 0, nil
	}
	fc := head[1]
	if fc&0x80 != 0 {
		return 2, 5, nil
	}
	switch fc {
	case 0x01, 0x02, 0x03, 0x04, 0x11, 0x17:
		return counted(2, 2)(head)
	case 0x05, 0x06, 0x0F, 0x10:
		return fixed(8)(head)
	case 0x16:
		return fixed(10)(head)
	}
	return 2, 0, fmt.Errorf("%w: 0x%02x", ErrUnknown, fc)
}

// RequestLen tells the length of a request frame from its first bytes, as
// ResponseLen does for responses.
func RequestLen(head []byte) (need, total int, err error) {
	if len(head) < 2 {
		return 2, 0, nil
	}
	switch fc := head[1]; fc {
	case 0x01, 0x02, 0x03, 0x04, 0x05, 0x06:
		return fixed(8)(head)
	case 0x0F, 0x10:
		return counted(6, 2)(head)
	case 0x11:
		return fixed(4)(head)
	case 0x16:
		return fixed(10)(head)
	case 0x17:
		return counted(10, 2)(head)
	default:
		return 2, 0, fmt.Errorf("%w: 0x%02x", ErrUnknown, fc)
	}
}

// DeadlineReader is a stream whose reads can be bounded in time: net.Conn
// and *os.File on a pollable descriptor (serial ports, ptys) both are.
type DeadlineReader interface {
	io.Reader
	SetReadDeadline(t time.Time) error
}

// ReadFrame reads exactly one frame from r, using length to tell where it
// ends, and returns it. The whole frame must arrive before deadline (zero
// means none). It does not check the CRC; Decode does. buf is reused when
// it is big enough.
func ReadFrame(r DeadlineReader, deadline time.Time, length func([]byte) (int, int, error), buf []byte) ([]byte, error) {
	if cap(buf) < MaxFrame {
		buf = make([]byte, MaxFrame)
	}
	buf = buf[:MaxFrame]
	if err := r.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n := 0
	for {
		need, total, err := length(buf[:n])
		if err != nil {
			return buf[:n], err
		}
		want := need
		if n >= need {
			if total < MinFrame {
				return buf[:n], ErrTooShort
			}
			if total > MaxFrame {
				return buf[:n], ErrTooLong
			}
			if n >= total {
				return buf[:total], nil
			}
			want = total
		}
		// Read no further than the frame, so the next one stays in the stream.
		m, err := r.Read(buf[n:want])
		n += m
		if err != nil && m == 0 {
			return buf[:n], err
		}
	}
}

// CharTime returns how long one character takes on a serial line: 11 bits
// (start, 8 data, parity or a second stop bit, stop) at baud.
func CharTime(baud int) time.Duration {
	if baud <= 0 {
		baud = 9600
	}
	return time.Duration(11 * int64(time.Second) / int64(baud))
}

// FrameGap returns the silence that must separate two frames: 3.5
// characters, and at least 1.75 ms above 19200 baud, as the serial line
// guide asks.
func FrameGap(baud int) time.Duration {
	if baud > 19200 {
		return 1750 * time.Microsecond
	}
	return CharTime(baud) * 7 / 2
}
