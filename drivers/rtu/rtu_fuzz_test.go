package rtu

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// sliceReader serves a byte slice as a stream with deadlines that never
// expire; it returns ErrUnexpectedEOF-like io errors at the end.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errors.New("end of input")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (r *sliceReader) SetReadDeadline(time.Time) error { return nil }

func TestCRCKnownValue(t *testing.T) {
	// Read holding registers 0..1 of unit 1: 01 03 00 00 00 01, CRC 84 0A.
	f := Encode(1, []byte{3, 0, 0, 0, 1})
	if !bytes.Equal(f[len(f)-2:], []byte{0x84, 0x0A}) {
		t.Fatalf("CRC % x, want 84 0a", f[len(f)-2:])
	}
}

// FuzzFrames feeds arbitrary bytes to the frame reader and decoder: they
// must never panic, never return a frame longer than MaxFrame, and a frame
// that decodes must re-encode to itself.
func FuzzFrames(f *testing.F) {
	f.Add(Encode(1, []byte{3, 4, 0x53, 0x75, 0x6e, 0x53}), true)
	f.Add(Encode(7, []byte{0x83, 2}), true)
	f.Add(Encode(1, []byte{0x10, 0x9c, 0x40, 0, 1}), true)
	f.Add(Encode(1, []byte{3, 0x9c, 0x40, 0, 2}), false)
	f.Add(Encode(1, []byte{0x10, 0x9c, 0x40, 0, 1, 2, 0, 5}), false)
	f.Add([]byte{1, 3, 0xFF}, true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, in []byte, response bool) {
		length := RequestLen
		if response {
			length = ResponseLen
		}
		fr, err := ReadFrame(&sliceReader{b: in}, time.Time{}, length, nil)
		if len(fr) > MaxFrame {
			t.Fatalf("frame of %d bytes", len(fr))
		}
		if err != nil {
			return
		}
		unit, pdu, err := Decode(fr)
		if err != nil {
			return
		}
		if got := Encode(unit, pdu); !bytes.Equal(got, fr) {
			t.Fatalf("re-encoded % x, want % x", got, fr)
		}
	})
}
