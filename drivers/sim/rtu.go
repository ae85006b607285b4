package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hearth-energy/hearth/drivers/rtu"
	"github.com/hearth-energy/hearth/drivers/serial"
)

// RTUStream is a byte stream RTU frames travel on: a serial line or pty
// opened with package serial, or a TCP connection from a serial gateway's
// client. Closing it must interrupt a pending Read.
type RTUStream interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
}

// resyncQuiet is how long the line must stay silent after a damaged frame
// before the next byte is taken as the start of a frame.
const resyncQuiet = 20 * time.Millisecond

// frameTimeout bounds the rest of a frame once its first byte came: a
// whole 256-byte frame at 1200 baud.
const frameTimeout = 2500 * time.Millisecond

// charTimeout is the silence inside a frame that ends it. The serial line
// guide says 1.5 characters; a pty has no baud rate and its bytes come in
// bursts, so this is generous, and a frame cut short by line noise is
// still dropped before the next request.
const charTimeout = 50 * time.Millisecond

// ServeRTU answers Modbus RTU requests on s for every simulator in sims,
// each answering its own unit id, as several devices share one RS-485
// line. Requests for other units get no answer. It returns nil when ctx
// is cancelled, or the error that ended the stream. ServeRTU owns s and
// closes it.
//
// Faults apply as on TCP, except that on a serial line Drop sends nothing
// (there is no connection to close) and Corrupt sends the answer with a
// damaged CRC.
func ServeRTU(ctx context.Context, s RTUStream, sims ...*Simulator) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	defer s.Close()
	byUnit := map[uint8]*Simulator{}
	for _, sm := range sims {
		byUnit[sm.cfg.UnitID] = sm
	}
	var log = sims[0].log
	buf := make([]byte, rtu.MaxFrame)
	for {
		// Wait as long as it takes for a frame to begin.
		if err := s.SetReadDeadline(time.Time{}); err != nil {
			return closedOr(ctx, err)
		}
		n, err := s.Read(buf[:1])
		if err != nil || n == 0 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return closedOr(ctx, err)
		}
		frame, err := rtu.ReadFrame(&prefixed{b: buf[:1], r: s, gap: charTimeout}, time.Now().Add(frameTimeout), rtu.RequestLen, nil)
		if err == nil {
			var unit byte
			var pdu []byte
			unit, pdu, err = rtu.Decode(frame)
			if err == nil {
				sm, ok := byUnit[unit]
				if !ok {
					continue // another device's request
				}
				resp, act := sm.serve(ctx, unit, pdu)
				if act == actDrop {
					if d, ok := s.(dropper); ok {
						d.drop()
						return nil
					}
				}
				if act == actSilent || act == actDrop {
					continue
				}
				out := rtu.Encode(unit, resp)
				if act == actCorrupt {
					out[len(out)-1] ^= 0xFF
				}
				if _, err := s.Write(out); err != nil {
					return closedOr(ctx, err)
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Debug("rtu: bad request frame, resynchronising", "err", err)
		if err := resync(s); err != nil {
			return closedOr(ctx, err)
		}
	}
}

// prefixed reads b first, then r: the first byte of a frame was read
// before ReadFrame started.
// Each read must also come within gap of the previous one.
type prefixed struct {
	b        []byte
	r        RTUStream
	gap      time.Duration
	deadline time.Time
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.b) > 0 {
		n := copy(b, p.b)
		p.b = p.b[n:]
		return n, nil
	}
	d := time.Now().Add(p.gap)
	if !p.deadline.IsZero() && p.deadline.Before(d) {
		d = p.deadline
	}
	if err := p.r.SetReadDeadline(d); err != nil {
		return 0, err
	}
	return p.r.Read(b)
}

func (p *prefixed) SetReadDeadline(t time.Time) error {
	p.deadline = t
	return nil
}

// resync discards bytes until the line has been quiet for resyncQuiet.
func resync(s RTUStream) error {
	var b [256]byte
	for {
		if err := s.SetReadDeadline(time.Now().Add(resyncQuiet)); err != nil {
			return err
		}
		_, err := s.Read(b[:])
		if errors.Is(err, errDeadline) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func closedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve rtu: %w", err)
}

// ServeRTUOverTCP serves RTU frames over TCP on ln, as a serial-to-Ethernet
// gateway in transparent mode does, for every simulator in sims. It
// returns as ServeTCP does, and owns ln. A Drop fault closes the
// connection.
func ServeRTUOverTCP(ctx context.Context, ln net.Listener, sims ...*Simulator) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("accept rtu over tcp: %w", aerr)
			}
			break
		}
		wg.Go(func() {
			ServeRTU(ctx, dropConn{c.(*net.TCPConn)}, sims...)
		})
	}
	ln.Close()
	wg.Wait()
	return err
}

// dropper is a stream that a Drop fault can cut: a TCP connection.
type dropper interface{ drop() }

type dropConn struct{ *net.TCPConn }

func (c dropConn) drop() { c.Close() }

var errDeadline = os.ErrDeadlineExceeded

// ServeRTUDevice opens the serial device (or pty) at path at baud, 8N1,
// and serves RTU on it, as ServeRTU does, until ctx is cancelled.
func ServeRTUDevice(ctx context.Context, path string, baud int, sims ...*Simulator) error {
	cfg := serial.Config{Baud: baud}
	f, err := serial.Open(path, cfg)
	if err != nil {
		return err
	}
	sims[0].log.Info("modbus rtu serving", "device", path, "baud", cfg.Baud)
	return ServeRTU(ctx, f, sims...)
}
