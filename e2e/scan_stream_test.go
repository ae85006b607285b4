package e2e

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
)

// unitServer is a Modbus TCP server in front of simulators, one per unit
// id, that records the unit id of every request it receives. A unit with
// no simulator gets no answer, as behind a TCP gateway. Before it answers
// a request for gateUnit (0: none) it waits until gate is closed (at most
// 10 s).
type unitServer struct {
	addr     string
	sims     map[uint8]*sim.Simulator
	gateUnit uint8
	gate     chan struct{}

	mu       sync.Mutex
	asked    []uint8
	gateShut bool // the gate was still shut when gateUnit was asked
}

func startUnitServer(t *testing.T, gateUnit uint8, sims map[uint8]*sim.Simulator) *unitServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &unitServer{addr: ln.Addr().String(), sims: sims, gateUnit: gateUnit, gate: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *unitServer) serve(c net.Conn) {
	defer c.Close()
	for {
		var hdr [7]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[4:6]))
		if n < 2 || n > 254 {
			return
		}
		pdu := make([]byte, n-1)
		if _, err := io.ReadFull(c, pdu); err != nil {
			return
		}
		unit := hdr[6]
		s.mu.Lock()
		if len(s.asked) == 0 || s.asked[len(s.asked)-1] != unit {
			s.asked = append(s.asked, unit)
		}
		s.mu.Unlock()
		if unit == s.gateUnit && s.gateUnit != 0 {
			select {
			case <-s.gate:
			default:
				s.mu.Lock()
				s.gateShut = true
				s.mu.Unlock()
				select {
				case <-s.gate:
				case <-time.After(10 * time.Second):
				}
			}
		}
		sm := s.sims[unit]
		if sm == nil {
			continue
		}
		resp, ok := sm.Handle(unit, pdu)
		if !ok {
			continue
		}
		out := make([]byte, 7, 7+len(resp))
		copy(out, hdr[:4])
		binary.BigEndian.PutUint16(out[4:6], uint16(len(resp)+1))
		out[6] = unit
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// units returns the distinct unit ids asked, in the order first asked.
func (s *unitServer) units() []uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var u []uint8
	for _, x := range s.asked {
		if !slices.Contains(u, x) {
			u = append(u, x)
		}
	}
	return u
}

// TestModbusScanTCPStopsAtFirstAnswer scans a Modbus TCP address where
// units 3 and 5 answer: by default the scan stops at unit 3 and asks no
// unit after it; --all asks every unit of --units, ranges and single ids
// alike, and finds both.
func TestModbusScanTCPStopsAtFirstAnswer(t *testing.T) {
	t.Parallel()
	srv := startUnitServer(t, 0, map[uint8]*sim.Simulator{
		3: sim.New(sim.Config{UnitID: 3, Serial: "U3"}),
		5: sim.New(sim.Config{UnitID: 5, Serial: "U5"}),
	})
	out, errOut, code := hearthCLI(t, nil, "modbus", "scan", "--direct", "--address", srv.addr, "--units", "1-10,100", "--timeout", "200ms", "--json")
	if code != 0 {
		t.Fatalf("scan: exit %d, stderr %s", code, errOut)
	}
	var sc struct{ Units []struct{ Unit int } }
	if err := json.Unmarshal([]byte(out), &sc); err != nil {
		t.Fatalf("scan --json: %v\n%s", err, out)
	}
	if len(sc.Units) != 1 || sc.Units[0].Unit != 3 {
		t.Errorf("scan found %+v, want unit 3 alone", sc.Units)
	}
	if got := srv.units(); !slices.Equal(got, []uint8{1, 2, 3}) {
		t.Errorf("units asked %v, want 1,2,3: a TCP device that answered ends the scan", got)
	}

	srv.mu.Lock()
	srv.asked = nil
	srv.mu.Unlock()
	out, errOut, code = hearthCLI(t, nil, "modbus", "scan", "--direct", "--address", srv.addr, "--units", "1-6,100", "--timeout", "200ms", "--all")
	if code != 0 {
		t.Fatalf("scan --all: exit %d, stderr %s", code, errOut)
	}
	if got := srv.units(); !slices.Equal(got, []uint8{1, 2, 3, 4, 5, 6, 100}) {
		t.Errorf("units asked with --all %v, want 1-6,100", got)
	}
	var rows []string
	for l := range strings.Lines(out) {
		rows = append(rows, strings.Fields(l)[0])
	}
	if !slices.Equal(rows, []string{"UNIT", "3", "5"}) {
		t.Errorf("scan --all table rows %v, want the header, unit 3 then unit 5:\n%s", rows, out)
	}
}

// TestModbusScanStreams checks that a direct scan prints a unit as soon as
// it answered: the server holds back its reply to the last unit until the
// row of unit 2 was read from hearth's stdout. Unit 3, absent, lies
// between, so a scan that prints as units answer has printed unit 2 by
// the time it asks unit 4; one that prints at the end has not.
func TestModbusScanStreams(t *testing.T) {
	t.Parallel()
	srv := startUnitServer(t, 4, map[uint8]*sim.Simulator{
		2: sim.New(sim.Config{UnitID: 2, Serial: "U2"}),
		4: sim.New(sim.Config{UnitID: 4, Serial: "U4"}),
	})
	cmd := exec.Command(hearthBin, "modbus", "scan", "--direct", "--address", srv.addr, "--units", "1-4", "--all", "--timeout", "2s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var rows []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		rows = append(rows, f[0])
		if f[0] == "2" {
			close(srv.gate)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("scan: %v", err)
	}
	if !slices.Equal(rows, []string{"UNIT", "2", "4"}) {
		t.Errorf("rows %v, want the header, unit 2 then unit 4", rows)
	}
	select {
	case <-srv.gate:
	default:
		t.Fatal("the row of unit 2 never came")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.gateShut {
		t.Error("unit 4 was asked before the row of unit 2 was printed")
	}
}
