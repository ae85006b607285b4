package drivers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/goburrow/modbus"

	"github.com/hearth-energy/hearth/drivers/rtu"
	"github.com/hearth-energy/hearth/drivers/serial"
)

// Transports a link can use.
const (
	TransportTCP        = "tcp"          // Modbus TCP (MBAP framing)
	TransportRTU        = "rtu"          // Modbus RTU on a serial line
	TransportRTUOverTCP = "rtu-over-tcp" // RTU frames over a TCP socket to a serial gateway
)

// A transport carries one request at a time over a link. goburrow/modbus
// keeps the framing (its packagers encode, verify and decode); the
// transporters here replace the library's, which read late replies as
// answers to later requests (goburrow issues 64 and 103), miss RTU
// exception frames (issue 81), sleep instead of reading, and have no
// deadline for a whole frame. Only the bus's owner goroutine touches a
// transport, so none of them lock.
type transport interface {
	// client is the Modbus client bound to this transport.
	client() modbus.Client
	// prepare addresses the next request to unit and bounds the whole
	// exchange (connect, send, receive) by deadline.
	prepare(unit uint8, deadline time.Time)
	// reset is called after any failed exchange: the stream may hold a
	// partial or late reply, so it is closed (or, on a serial line, left
	// to be drained before the next request).
	reset()
	// frameGap is the silence the link needs between two frames.
	frameGap() time.Duration
	close() error
	// counters: redials (connections opened after the first) and stale
	// frames discarded.
	counters() (redials, stale uint64)
}

func newTransport(cfg LinkConfig) (transport, error) {
	switch cfg.Transport {
	case TransportTCP:
		t := &tcpTransport{addr: cfg.Address}
		t.pk = modbus.NewTCPClientHandler(cfg.Address)
		t.c = modbus.NewClient2(t.pk, t)
		return t, nil
	case TransportRTU:
		sc := serial.Config{Baud: cfg.Baud, Parity: cfg.Parity, StopBits: cfg.StopBits}
		t := &rtuTransport{gap: rtu.FrameGap(cfg.Baud), keep: true, open: func(time.Time) (stream, error) {
			return serial.Open(cfg.Address, sc)
		}}
		t.pk = modbus.NewRTUClientHandler(cfg.Address)
		t.c = modbus.NewClient2(t.pk, t)
		return t, nil
	case TransportRTUOverTCP:
		t := &rtuTransport{open: func(deadline time.Time) (stream, error) {
			d := net.Dialer{Deadline: deadline}
			c, err := d.Dial("tcp", cfg.Address)
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		}}
		t.pk = modbus.NewRTUClientHandler(cfg.Address)
		t.c = modbus.NewClient2(t.pk, t)
		return t, nil
	}
	return nil, fmt.Errorf("transport %q is not one of tcp, rtu, rtu-over-tcp", cfg.Transport)
}

// stream is an open link: a TCP connection or a serial line.
type stream interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	syscall.Conn
}

var (
	_ stream = (*net.TCPConn)(nil)
	_ stream = (*os.File)(nil)
)

// drain discards whatever the stream has already received, without
// waiting: a reply that came after its request timed out, or a second copy
// of an answer, must not be read as the answer to the next request.
func drain(s stream) (int, error) {
	// An expired deadline from the last exchange would fail the raw read
	// before it starts.
	if err := s.SetReadDeadline(time.Time{}); err != nil {
		return 0, err
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	var buf [256]byte
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf[:])
			if n > 0 {
				total += n
				continue
			}
			if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
				rerr = err
			}
			if n == 0 && err == nil {
				rerr = io.EOF
			}
			return true // never wait for more
		}
	})
	if err != nil {
		return total, err
	}
	return total, rerr
}

// MBAP header size: transaction id, protocol id, length, unit id.
const mbapHeader = 7

// tcpTransport is Modbus TCP. It checks that each reply carries the
// transaction id of the request it answers and discards any that does
// not, so a late or repeated reply is never taken for the current answer.
type tcpTransport struct {
	addr     string
	pk       *modbus.TCPClientHandler // packager only; its transporter is never used
	c        modbus.Client
	conn     net.Conn
	deadline time.Time
	dials    uint64
	stale    uint64
	buf      [mbapHeader + 254]byte
}

func (t *tcpTransport) client() modbus.Client { return t.c }

func (t *tcpTransport) prepare(unit uint8, deadline time.Time) {
	t.pk.SlaveId = unit
	t.deadline = deadline
}

func (t *tcpTransport) frameGap() time.Duration { return 0 }

func (t *tcpTransport) counters() (uint64, uint64) { return max(t.dials, 1) - 1, t.stale }

func (t *tcpTransport) reset() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
}

func (t *tcpTransport) close() error {
	t.reset()
	return nil
}

// Send implements modbus.Transporter.
func (t *tcpTransport) Send(req []byte) ([]byte, error) {
	if len(req) < mbapHeader+1 {
		return nil, fmt.Errorf("modbus tcp: request of %d bytes", len(req))
	}
	if t.conn != nil {
		n, err := drain(t.conn.(*net.TCPConn))
		if n > 0 {
			t.stale++
		}
		if err != nil {
			// The device closed the connection while idle: dial again.
			t.reset()
		}
	}
	if t.conn == nil {
		d := net.Dialer{Deadline: t.deadline}
		c, err := d.Dial("tcp", t.addr)
		if err != nil {
			return nil, err
		}
		t.conn = c
		t.dials++
	}
	if err := t.conn.SetDeadline(t.deadline); err != nil {
		return nil, err
	}
	if _, err := t.conn.Write(req); err != nil {
		return nil, err
	}
	tid := binary.BigEndian.Uint16(req)
	for {
		hdr := t.buf[:mbapHeader]
		if _, err := io.ReadFull(t.conn, hdr); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr[4:]))
		// The length counts the unit id and the PDU (function code and
		// at most 252 data bytes).
		if n < 2 || n > 254 {
			return nil, fmt.Errorf("modbus tcp: reply length %d out of range", n)
		}
		frame := t.buf[:mbapHeader+n-1]
		if _, err := io.ReadFull(t.conn, frame[mbapHeader:]); err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint16(frame) != tid {
			t.stale++ // a reply to an earlier request: skip it
			continue
		}
		return append([]byte(nil), frame...), nil
	}
}

// rtuTransport is Modbus RTU over a serial line or a TCP socket. Reads
// stop at the end of the frame the function code announces, exception
// frames included, under one deadline for the whole exchange.
type rtuTransport struct {
	open     func(deadline time.Time) (stream, error)
	keep     bool // a serial line stays open after errors; a socket is redialled
	gap      time.Duration
	pk       *modbus.RTUClientHandler // packager only
	c        modbus.Client
	s        stream
	deadline time.Time
	opens    uint64
	stale    uint64
	buf      [rtu.MaxFrame]byte
}

func (t *rtuTransport) client() modbus.Client { return t.c }

func (t *rtuTransport) prepare(unit uint8, deadline time.Time) {
	t.pk.SlaveId = unit
	t.deadline = deadline
}

func (t *rtuTransport) frameGap() time.Duration { return t.gap }

func (t *rtuTransport) counters() (uint64, uint64) { return max(t.opens, 1) - 1, t.stale }

func (t *rtuTransport) reset() {
	if !t.keep && t.s != nil {
		t.s.Close()
		t.s = nil
	}
}

func (t *rtuTransport) close() error {
	if t.s != nil {
		err := t.s.Close()
		t.s = nil
		return err
	}
	return nil
}

// Send implements modbus.Transporter.
func (t *rtuTransport) Send(req []byte) ([]byte, error) {
	if len(req) < rtu.MinFrame {
		return nil, fmt.Errorf("modbus rtu: request of %d bytes", len(req))
	}
	if t.s != nil {
		n, err := drain(t.s)
		if n > 0 {
			t.stale++
		}
		if err != nil {
			// The line or socket is gone: open it again.
			t.close()
		}
	}
	if t.s == nil {
		s, err := t.open(t.deadline)
		if err != nil {
			return nil, err
		}
		t.s = s
		t.opens++
		// A serial line keeps what it received while nobody had it open.
		if n, _ := drain(s); n > 0 {
			t.stale++
		}
	}
	if err := t.s.SetDeadline(t.deadline); err != nil {
		return nil, err
	}
	if _, err := t.s.Write(req); err != nil {
		t.s.Close()
		t.s = nil
		return nil, err
	}
	frame, err := rtu.ReadFrame(t.s, t.deadline, rtu.ResponseLen, t.buf[:])
	if err != nil {
		if errors.Is(err, io.EOF) {
			t.s.Close()
			t.s = nil
		}
		return nil, err
	}
	if frame[0] != req[0] {
		t.stale++
		return nil, fmt.Errorf("modbus rtu: reply from unit %d to a request for unit %d", frame[0], req[0])
	}
	if _, _, err := rtu.Decode(frame); err != nil {
		return nil, fmt.Errorf("modbus rtu: %w", err)
	}
	return append([]byte(nil), frame...), nil
}
