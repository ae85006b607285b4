package diag

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hearth-energy/hearth/drivers"
)

func TestDeviceCause(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, refused := net.Dial("tcp", addr)
	_, missing := os.Open("/dev/ttyUSB-none-such")
	down := &drivers.UnitDownError{Last: fmt.Errorf("read unit 7: %w", os.ErrDeadlineExceeded)}
	for _, c := range []struct {
		err       error
		transport string
		cause     string
		hint      string
	}{
		{fmt.Errorf("read unit 1 holding 40000+2: %w", refused), "tcp", CauseRefused, "wrong port?"},
		{fmt.Errorf("serial /dev/ttyUSB9: %w", missing), "rtu", CauseNoPort, "adapter plugged in"},
		{fmt.Errorf("serial /dev/ttyUSB0: %w", &os.PathError{Op: "open", Path: "/dev/ttyUSB0", Err: syscall.EACCES}), "rtu", CausePermission, "dialout"},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "tcp", CauseNoReply, "no reply from unit 7: wrong unit id?"},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "rtu", CauseNoReply, "A/B wiring"},
		{fmt.Errorf("probe SunSpec: %w", down), "tcp", CauseNoReply, "wrong unit id?"},
		{&drivers.ExceptionError{Function: 3, Code: 11}, "rtu-over-tcp", CauseGateway, "reached no unit 7"},
		{&drivers.ExceptionError{Function: 3, Code: 2}, "tcp", CauseException, "does not serve that register range"},
		{errors.New("modbus rtu: rtu: bad CRC"), "rtu", CauseGarbled, "baud rate"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, "tcp", CauseConnTimeout, "firewall"},
	} {
		cause, hint := DeviceCause(c.err, c.transport, addr, 7)
		if cause != c.cause || !strings.Contains(hint, c.hint) {
			t.Errorf("DeviceCause(%v) = %q, %q; want %q and a hint with %q", c.err, cause, hint, c.cause, c.hint)
		}
	}
	if c, h := DeviceCause(nil, "tcp", addr, 1); c != "" || h != "" {
		t.Errorf("DeviceCause(nil) = %q, %q", c, h)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestCausesAreDocumented: the status schema lists every cause.
func TestCausesAreDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/schemas/diag/status.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			Devices struct {
				Items struct {
					Properties struct {
						Cause struct {
							Enum []string `json:"enum"`
						} `json:"cause"`
					} `json:"properties"`
				} `json:"items"`
			} `json:"devices"`
		} `json:"properties"`
	}
	json.Unmarshal(b, &s)
	got := s.Properties.Devices.Items.Properties.Cause.Enum
	for _, c := range []string{CauseRefused, CauseUnreachable, CauseConnTimeout, CauseDNS, CauseNoPort, CausePermission, CauseBusy,
		CauseNoReply, CauseGateway, CauseException, CauseGarbled, CauseClosed, CauseOther} {
		if !slices.Contains(got, c) {
			t.Errorf("status.json's cause enum %v lacks %q", got, c)
		}
	}
}
