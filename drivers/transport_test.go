package drivers

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/rtu"
)

// openBus opens a bus for the test. Unless the test says otherwise a unit
// is never marked down, so each fault shows on the request it hits.
func openBus(t *testing.T, cfg LinkConfig) *Bus {
	t.Helper()
	if cfg.DownAfter == 0 {
		cfg.DownAfter = 1000
	}
	b, err := OpenBus(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// wantEcho reads count registers at addr and checks each holds its own
// address, as the fakes answer.
func wantEcho(t *testing.T, b *Bus, addr, count uint16) {
	t.Helper()
	regs, err := b.Read(context.Background(), 1, Holding, addr, count)
	if err != nil {
		t.Fatalf("read %d+%d: %v", addr, count, err)
	}
	for i, r := range regs {
		if r != addr+uint16(i) {
			t.Fatalf("read %d+%d: register %d = %d, want %d (an answer to another request)", addr, count, i, r, addr+uint16(i))
		}
	}
}

// A reply that comes after its request timed out must not be read as the
// answer to the next request (goburrow issues 64 and 103: the client stays
// one transaction behind for ever).
func TestTCPLateReplyNotTakenForNextAnswer(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			if n.Add(1) == 1 {
				time.Sleep(300 * time.Millisecond) // well past the client's timeout
			}
			c.Write(mbapFrame(req.tid, req.unit, echoRead(req.pdu)))
		}
	})
	b := openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: 100 * time.Millisecond})
	if _, err := b.Read(context.Background(), 1, Holding, 100, 2); !errors.Is(err, ErrTimeout) {
		t.Fatalf("first read: got %v, want a timeout", err)
	}
	for addr := uint16(200); addr < 205; addr++ {
		wantEcho(t, b, addr, 3)
	}
}

// A device that answers every request twice leaves a copy in the stream;
// it must be discarded, not taken for the next answer.
func TestTCPDuplicateRepliesDiscarded(t *testing.T) {
	t.Parallel()
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			fr := mbapFrame(req.tid, req.unit, echoRead(req.pdu))
			c.Write(fr)
			time.Sleep(5 * time.Millisecond)
			c.Write(fr)
		}
	})
	b := openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: time.Second})
	for addr := uint16(10); addr < 20; addr++ {
		wantEcho(t, b, addr, 1)
		time.Sleep(10 * time.Millisecond)
	}
	if s := b.Stats(); s.Stale == 0 || s.Errors != 0 {
		t.Errorf("stats %+v: want stale replies counted and no errors", s)
	}
}

// A reply with a transaction id that matches no request is never accepted.
func TestTCPWrongTransactionIDRejected(t *testing.T) {
	t.Parallel()
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			c.Write(mbapFrame(req.tid+7, req.unit, echoRead(req.pdu)))
		}
	})
	b := openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: 150 * time.Millisecond})
	regs, err := b.Read(context.Background(), 1, Holding, 5, 1)
	if err == nil {
		t.Fatalf("read accepted %v from a reply with the wrong transaction id", regs)
	}
	if s := b.Stats(); s.Stale == 0 {
		t.Errorf("stats %+v: want the mismatched reply counted as stale", s)
	}
}

// After any error the connection is closed and redialled.
func TestTCPRedialAfterError(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	f := startFake(t, func(c net.Conn) {
		for {
			req, err := readMBAP(c)
			if err != nil {
				return
			}
			if n.Add(1) == 1 {
				// Half a frame, then silence.
				c.Write(mbapFrame(req.tid, req.unit, echoRead(req.pdu))[:9])
				continue
			}
			c.Write(mbapFrame(req.tid, req.unit, echoRead(req.pdu)))
		}
	})
	b := openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: 100 * time.Millisecond})
	if _, err := b.Read(context.Background(), 1, Holding, 1, 4); err == nil {
		t.Fatal("read of a truncated reply succeeded")
	}
	wantEcho(t, b, 50, 4)
	if got := f.accepted(); got != 2 {
		t.Errorf("server accepted %d connections, want 2 (redial after the error)", got)
	}
}

// A device that closes idle connections costs no failed request.
func TestTCPPeerCloseRedialsTransparently(t *testing.T) {
	t.Parallel()
	f := startFake(t, func(c net.Conn) {
		req, err := readMBAP(c)
		if err != nil {
			return
		}
		c.Write(mbapFrame(req.tid, req.unit, echoRead(req.pdu)))
		// and hang up
	})
	b := openBus(t, LinkConfig{Transport: TransportTCP, Address: f.addr(), Timeout: time.Second})
	for addr := uint16(1); addr <= 5; addr++ {
		wantEcho(t, b, addr, 2)
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if s := b.Stats(); s.Errors != 0 {
		t.Errorf("stats %+v: want no errors", s)
	}
}

// rtuFake serves RTU frames over TCP; answer turns a request frame into
// the bytes to send back.
func rtuFake(t *testing.T, answer func(n int, req []byte) [][]byte) *fakeServer {
	var n atomic.Int32
	return startFake(t, func(c net.Conn) {
		for {
			req, err := readRTU(c)
			if err != nil {
				return
			}
			for _, out := range answer(int(n.Add(1)), req) {
				c.Write(out)
				time.Sleep(2 * time.Millisecond)
			}
		}
	})
}

func rtuEcho(req []byte) []byte { return rtu.Encode(req[0], echoRead(req[1:len(req)-2])) }

// An RTU exception frame is five bytes long; goburrow's transporter looks
// for `fc & 0x80` where `fc | 0x80` was meant (issue 81) and misreads it.
func TestRTUExceptionDetected(t *testing.T) {
	t.Parallel()
	f := rtuFake(t, func(n int, req []byte) [][]byte {
		if n == 1 {
			return [][]byte{rtu.Encode(req[0], []byte{req[1] | 0x80, 0x02})}
		}
		return [][]byte{rtuEcho(req)}
	})
	b := openBus(t, LinkConfig{Transport: TransportRTUOverTCP, Address: f.addr(), Timeout: 500 * time.Millisecond})
	_, err := b.Read(context.Background(), 1, Holding, 7, 2)
	var exc *ExceptionError
	if !errors.As(err, &exc) || exc.Code != 2 || exc.Function != 0x03 {
		t.Fatalf("got %v, want exception 2 to function 0x03", err)
	}
	wantEcho(t, b, 8, 2)
	if s := b.UnitStats(1); s.Exceptions != 1 || s.Down {
		t.Errorf("unit stats %+v: want one exception and the unit up", s)
	}
}

// Damaged frames, answers from another unit and short frames are errors,
// and the next request gets its own answer.
func TestRTUBadFramesRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bad  func(req []byte) []byte
	}{
		{"crc", func(req []byte) []byte { f := rtuEcho(req); f[len(f)-1] ^= 0x55; return f }},
		{"other unit", func(req []byte) []byte { return rtu.Encode(req[0]+1, echoRead(req[1:len(req)-2])) }},
		{"byte count", func(req []byte) []byte {
			// One register short, with a byte count and CRC to match.
			pdu := echoRead(req[1 : len(req)-2])
			pdu = pdu[:len(pdu)-2]
			pdu[1] -= 2
			return rtu.Encode(req[0], pdu)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := rtuFake(t, func(n int, req []byte) [][]byte {
				if n == 1 {
					return [][]byte{tc.bad(req)}
				}
				return [][]byte{rtuEcho(req)}
			})
			b := openBus(t, LinkConfig{Transport: TransportRTUOverTCP, Address: f.addr(), Timeout: 200 * time.Millisecond})
			if regs, err := b.Read(context.Background(), 1, Holding, 30, 3); err == nil {
				t.Fatalf("accepted %v from a bad frame", regs)
			}
			wantEcho(t, b, 40, 3)
		})
	}
}

// The RTU transport waits for the whole frame under one deadline, and no
// longer: a frame that stops half-way is a timeout, not a hang.
func TestRTUWholeFrameDeadline(t *testing.T) {
	t.Parallel()
	f := rtuFake(t, func(n int, req []byte) [][]byte {
		fr := rtuEcho(req)
		// Trickle the frame a byte at a time: it completes, but long
		// after the deadline. A per-read timeout would accept it.
		out := make([][]byte, 0, len(fr))
		for i := range fr {
			out = append(out, fr[i:i+1])
		}
		return out
	})
	b := openBus(t, LinkConfig{Transport: TransportRTUOverTCP, Address: f.addr(), Timeout: 150 * time.Millisecond})
	if _, err := b.Read(context.Background(), 1, Holding, 1, 60); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want a timeout", err)
	}
}
