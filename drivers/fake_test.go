package drivers

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/rtu"
)

// fakeServer is a raw TCP Modbus server written for these tests: each
// accepted connection is handed to serve, which misbehaves as the test
// needs. It is closed, with its connections, when the test ends.
type fakeServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	n     int // connections accepted
}

func startFake(t *testing.T, serve func(c net.Conn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.n++
			f.mu.Unlock()
			f.wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

func (f *fakeServer) accepted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// mbapReq is one Modbus TCP request as the fake saw it.
type mbapReq struct {
	tid  uint16
	unit byte
	pdu  []byte
}

func readMBAP(c net.Conn) (mbapReq, error) {
	var hdr [7]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return mbapReq{}, err
	}
	n := int(binary.BigEndian.Uint16(hdr[4:]))
	pdu := make([]byte, n-1)
	if _, err := io.ReadFull(c, pdu); err != nil {
		return mbapReq{}, err
	}
	return mbapReq{tid: binary.BigEndian.Uint16(hdr[:]), unit: hdr[6], pdu: pdu}, nil
}

func mbapFrame(tid uint16, unit byte, pdu []byte) []byte {
	f := make([]byte, 7+len(pdu))
	binary.BigEndian.PutUint16(f, tid)
	binary.BigEndian.PutUint16(f[4:], uint16(1+len(pdu)))
	f[6] = unit
	copy(f[7:], pdu)
	return f
}

// echoRead answers a read request with registers holding their own
// address, so a reply says which request it answers.
func echoRead(pdu []byte) []byte {
	addr, n := binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])
	resp := []byte{pdu[0], byte(2 * n)}
	for i := range n {
		resp = binary.BigEndian.AppendUint16(resp, addr+i)
	}
	return resp
}

// readRTU reads one RTU request frame.
func readRTU(c net.Conn) ([]byte, error) {
	f, err := rtu.ReadFrame(c.(*net.TCPConn), time.Time{}, rtu.RequestLen, nil)
	return append([]byte(nil), f...), err
}

func listenLocal() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
