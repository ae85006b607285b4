package sim

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/rtu"
	"github.com/hearth-energy/hearth/drivers/serial"
	"github.com/hearth-energy/hearth/drivers/sim/ptypair"
)

// rtuLine serves sims on one end of a pty pair and returns the other end,
// opened, for a raw client.
func rtuLine(t *testing.T, sims ...*Simulator) *os.File {
	t.Helper()
	a, b := ptypair.Start(t)
	dev, err := serial.Open(b, serial.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeRTU(ctx, dev, sims...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeRTU returned %v after cancel, want nil", err)
		}
	})
	cl, err := serial.Open(a, serial.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// rtuCall sends a request frame and returns the answer frame, or an error
// when none came within wait.
func rtuCall(t *testing.T, f *os.File, req []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	if _, err := f.Write(req); err != nil {
		t.Fatal(err)
	}
	fr, err := rtu.ReadFrame(f, time.Now().Add(wait), rtu.ResponseLen, nil)
	return append([]byte(nil), fr...), err
}

func TestRTUServesSeveralUnits(t *testing.T) {
	t.Parallel()
	s1 := New(Config{UnitID: 1, Serial: "A"})
	s2 := New(Config{UnitID: 2, Serial: "B"})
	f := rtuLine(t, s1, s2)

	for _, unit := range []byte{1, 2} {
		resp, err := rtuCall(t, f, rtu.Encode(unit, readPDU(fcReadHolding, 40000, 2)), 2*time.Second)
		if err != nil {
			t.Fatalf("unit %d: %v", unit, err)
		}
		u, pdu, err := rtu.Decode(resp)
		if err != nil || u != unit || !bytes.Equal(pdu, []byte{3, 4, 0x53, 0x75, 0x6e, 0x53}) {
			t.Fatalf("unit %d: got unit %d pdu % x err %v, want the SunS marker", unit, u, pdu, err)
		}
	}
	// Nobody answers unit 5.
	if _, err := rtuCall(t, f, rtu.Encode(5, readPDU(fcReadHolding, 40000, 2)), 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unit 5: got %v, want no answer", err)
	}
	// An exception frame is five bytes with a good CRC.
	resp, err := rtuCall(t, f, rtu.Encode(1, readPDU(fcReadHolding, 1, 2)), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, pdu, err := rtu.Decode(resp); err != nil || !bytes.Equal(pdu, []byte{0x83, 0x02}) {
		t.Fatalf("got pdu % x err %v, want exception 0x83 02", pdu, err)
	}
}

func TestRTUFaultsAndResync(t *testing.T) {
	t.Parallel()
	s := New(Config{UnitID: 1})
	f := rtuLine(t, s)
	req := rtu.Encode(1, readPDU(fcReadHolding, 40000, 2))

	s.SetFault(Fault{Corrupt: true, Requests: 1})
	resp, err := rtuCall(t, f, req, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rtu.Decode(resp); !errors.Is(err, rtu.ErrCRC) {
		t.Fatalf("corrupt fault: got %v, want a CRC error", err)
	}
	s.SetFault(Fault{NoResponse: true, Requests: 1})
	if _, err := rtuCall(t, f, req, 200*time.Millisecond); err == nil {
		t.Fatal("noresponse fault: got an answer")
	}
	s.SetFault(Fault{Exception: 6, Requests: 1})
	resp, _ = rtuCall(t, f, req, 2*time.Second)
	if _, pdu, err := rtu.Decode(resp); err != nil || !bytes.Equal(pdu, []byte{0x83, 0x06}) {
		t.Fatalf("exception fault: got % x %v", pdu, err)
	}
	// Line noise is skipped, and the next good frame answered.
	f.Write([]byte{0x01, 0x03, 0xFF})
	time.Sleep(100 * time.Millisecond)
	resp, err = rtuCall(t, f, req, 2*time.Second)
	if _, _, derr := rtu.Decode(resp); err != nil || derr != nil {
		t.Fatalf("after noise: %v %v", err, derr)
	}
}

func TestParseFault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Fault
		err  string
	}{
		{"", Fault{}, ""},
		{"none", Fault{}, ""},
		{"latency=200ms", Fault{Latency: 200 * time.Millisecond}, ""},
		{"noresponse,requests=3", Fault{NoResponse: true, Requests: 3}, ""},
		{"exception=4", Fault{Exception: 4}, ""},
		{"corrupt, drop", Fault{Corrupt: true, Drop: true}, ""},
		{"exception=0", Fault{}, "code must be"},
		{"exception", Fault{}, "takes a value"},
		{"drop=1", Fault{}, "takes no value"},
		{"latency=soon", Fault{}, "invalid duration"},
		{"melt", Fault{}, "unknown item"},
	} {
		got, err := ParseFault(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFault(%q) error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseFault(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestControlProtocol(t *testing.T) {
	t.Parallel()
	s1 := New(Config{UnitID: 1})
	s2 := New(Config{UnitID: 2})
	in := strings.NewReader("unit 2 fault noresponse\nsoc 80\nunit 1 state\nbogus\nunit 9 soc 1\n")
	var out bytes.Buffer
	if err := ServeControl(in, &out, s1, s2); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || lines[0] != "ok" || lines[1] != "ok" || !strings.HasPrefix(lines[2], `{"1":{`) ||
		!strings.HasPrefix(lines[3], "error: unknown command") || !strings.HasPrefix(lines[4], "error: no simulator") {
		t.Fatalf("answers:\n%s", out.String())
	}
	if _, ok := s2.Handle(2, readPDU(fcReadHolding, 40000, 2)); ok {
		t.Error("unit 2 answered after fault noresponse")
	}
	if _, ok := s1.Handle(1, readPDU(fcReadHolding, 40000, 2)); !ok {
		t.Error("unit 1 did not answer: the fault was for unit 2 only")
	}
	if soc := s1.State().SoCPct; soc < 79.9 || soc > 80.1 {
		t.Errorf("unit 1 SoC %.1f, want 80", soc)
	}

	out.Reset()
	if err := ServeControl(strings.NewReader("unit 2 control local\ncontrol sideways\n"), &out, s1, s2); err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSpace(out.String()), "\n"); len(got) != 2 || got[0] != "ok" || !strings.HasPrefix(got[1], "error: control: want local or remote") {
		t.Errorf("control answers:\n%s", out.String())
	}
	if s1.State().Local || !s2.State().Local {
		t.Errorf("after unit 2 control local: unit 1 local %t, unit 2 local %t; want unit 2 alone", s1.State().Local, s2.State().Local)
	}
}
