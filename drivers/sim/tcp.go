package sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// MBAP header: transaction id, protocol id, length, unit id.
const (
	mbapLen    = 7
	maxPDULen  = 253
	protocolID = 0
)

// ServeTCP serves Modbus TCP on ln until ctx is cancelled, then closes ln
// and every connection, waits for all the goroutines it started, and
// returns nil. Any number of clients may be connected; each connection's
// requests are answered in order. If Accept fails for another reason,
// ServeTCP shuts down the same way and returns that error. ServeTCP owns ln.
func (s *Simulator) ServeTCP(ctx context.Context, ln net.Listener) error {
	s.log.Info("modbus tcp listening", "addr", ln.Addr().String(), "unit", s.cfg.UnitID)
	return serveTCP(ctx, ln, s.log, s.serve)
}

// serveFunc executes one request PDU for a unit (see Simulator.serve).
type serveFunc func(ctx context.Context, unit uint8, pdu []byte) ([]byte, action)

// serveTCP is ServeTCP for any device that serves requests with serve.
func serveTCP(ctx context.Context, ln net.Listener, log *slog.Logger, serve serveFunc) error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
	)
	shutdown := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for c := range conns {
			c.Close()
		}
	}
	stop := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		shutdown()
	})
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("accept modbus tcp: %w", aerr)
			}
			break
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			serveConn(ctx, c, log, serve)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	close(stop)
	wg.Wait()
	return err
}

// serveConn answers the requests of one connection until it fails, the
// client closes it, or a fault drops it.
func serveConn(ctx context.Context, c net.Conn, log *slog.Logger, serve serveFunc) {
	log = log.With("remote", c.RemoteAddr().String())
	log.Debug("modbus tcp client connected")
	defer log.Debug("modbus tcp client gone")
	be := binary.BigEndian
	var hdr [mbapLen]byte
	buf := make([]byte, maxPDULen)
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("read mbap header", "err", err)
			}
			return
		}
		tid, pid, n := be.Uint16(hdr[0:]), be.Uint16(hdr[2:]), int(be.Uint16(hdr[4:]))
		// The length counts the unit id and the PDU. A length we cannot
		// trust leaves no way to find the next frame.
		if n < 2 || n-1 > maxPDULen {
			log.Debug("bad mbap length, closing", "len", n)
			return
		}
		pdu := buf[:n-1]
		if _, err := io.ReadFull(c, pdu); err != nil {
			log.Debug("read pdu", "err", err)
			return
		}
		if pid != protocolID {
			continue // not Modbus: discard, as the spec asks
		}
		resp, act := serve(ctx, hdr[6], pdu)
		switch act {
		case actSilent:
			continue
		case actDrop:
			return
		case actCorrupt:
			tid++ // answers a request that was never sent
		}
		frame := make([]byte, mbapLen+len(resp))
		be.PutUint16(frame[0:], tid)
		be.PutUint16(frame[2:], protocolID)
		be.PutUint16(frame[4:], uint16(1+len(resp)))
		frame[6] = hdr[6]
		copy(frame[mbapLen:], resp)
		if _, err := c.Write(frame); err != nil {
			log.Debug("write response", "err", err)
			return
		}
	}
}
