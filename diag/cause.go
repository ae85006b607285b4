package diag

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/hearth-energy/hearth/drivers"
)

// Causes of a failure to reach a Modbus device, as DeviceCause names them.
// They are stable strings of the API (the status report's devices[].cause).
const (
	CauseRefused     = "connection_refused" // nothing listens at host:port
	CauseUnreachable = "unreachable"        // no route to the host, or it is down
	CauseConnTimeout = "connect_timeout"    // the TCP connection was not answered
	CauseDNS         = "unknown_host"       // the host name does not resolve
	CauseNoPort      = "no_such_port"       // the serial device does not exist
	CausePermission  = "permission_denied"  // the serial device may not be opened
	CauseBusy        = "port_busy"          // another program holds the port
	CauseNoReply     = "no_reply"           // the link works, the unit is silent
	CauseGateway     = "gateway_no_target"  // a gateway answered for a silent unit
	CauseException   = "exception"          // the unit refused the request
	CauseGarbled     = "garbled"            // replies that do not decode
	CauseClosed      = "connection_closed"  // the device hung up
	CauseOther       = "other"
)

// DeviceCause says why a Modbus request failed, in words a tech at the
// battery can act on: Cause is one of the Cause constants and Hint the next
// thing to check. A nil err has no cause ("", ""). Link-level causes
// (everything before CauseNoReply) mean no unit on the link can answer;
// the rest are about the one unit.
func DeviceCause(err error, transport, address string, unit int) (cause, hint string) {
	if err == nil {
		return "", ""
	}
	var exc *drivers.ExceptionError
	var dns *net.DNSError
	var op *net.OpError
	isOp := errors.As(err, &op)
	switch {
	case errors.As(err, &exc) && (exc.Code == 10 || exc.Code == 11):
		return CauseGateway, fmt.Sprintf("the gateway at %s reached no unit %d: wrong unit id, or the gateway's serial side (wiring, baud, parity)", address, unit)
	case errors.As(err, &exc):
		return CauseException, fmt.Sprintf("unit %d answered %v: it does not serve that register range (another profile, or not SunSpec at this base)", unit, exc)
	case errors.As(err, &dns):
		return CauseDNS, fmt.Sprintf("cannot resolve %q: check the address, or use the device's IP", dns.Name)
	case errors.Is(err, syscall.ECONNREFUSED):
		return CauseRefused, fmt.Sprintf("connection refused by %s: wrong port? (Modbus TCP is usually 502), or the device's Modbus TCP server is off", address)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return CauseUnreachable, fmt.Sprintf("%s is unreachable: wrong IP address, or the device is off the network", address)
	case isOp && op.Op == "dial" && op.Timeout():
		return CauseConnTimeout, fmt.Sprintf("no answer to the connection at %s: wrong IP address, the device is off, or a firewall drops it", address)
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, os.ErrNotExist):
		return CauseNoPort, fmt.Sprintf("serial port %s does not exist: is the adapter plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)", address)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return CausePermission, fmt.Sprintf("no permission to open %s: run as the hearth user (sudo -u hearth …) or join group dialout", address)
	case errors.Is(err, syscall.EBUSY):
		return CauseBusy, fmt.Sprintf("%s is in use by another program: stop it (is hearth running? then drop --direct)", address)
	case errors.Is(err, drivers.ErrTimeout):
		hint := fmt.Sprintf("no reply from unit %d: wrong unit id?", unit)
		if transport == drivers.TransportRTU || transport == drivers.TransportRTUOverTCP {
			hint += " Or the serial line: A/B wiring, baud rate, parity, termination"
		}
		return CauseNoReply, hint
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), isEOF(err):
		return CauseClosed, fmt.Sprintf("%s closed the connection: the device may allow one Modbus client only (is another one connected?)", address)
	case isGarbled(err):
		return CauseGarbled, "replies do not decode: baud rate, parity or stop bits differ from the device's, or noise on the line"
	}
	return CauseOther, err.Error()
}

// LinkCause reports whether a DeviceCause is about the link rather than
// one unit: then no unit on it can answer, and scanning further is futile.
func LinkCause(cause string) bool {
	switch cause {
	case CauseRefused, CauseUnreachable, CauseConnTimeout, CauseDNS, CauseNoPort, CausePermission, CauseBusy:
		return true
	}
	return false
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// isGarbled matches the framing errors of the RTU and TCP transports: bad
// CRCs, frames too short or too long, replies that cannot be decoded.
func isGarbled(err error) bool {
	s := err.Error()
	for _, m := range []string{"bad CRC", "frame too short", "frame too long", "reply length", "reply from unit", "function code with no known frame length"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// CauseLabel is a DeviceCause in a few words, for a table cell or a
// verdict: "connection refused", "no reply from unit 7". An unknown or
// "other" cause gives "".
func CauseLabel(cause string, unit int) string {
	switch cause {
	case CauseRefused:
		return "connection refused"
	case CauseUnreachable:
		return "host unreachable"
	case CauseConnTimeout:
		return "connect timeout"
	case CauseDNS:
		return "unknown host"
	case CauseNoPort:
		return "no such serial port"
	case CausePermission:
		return "permission denied"
	case CauseBusy:
		return "port busy"
	case CauseNoReply:
		return fmt.Sprintf("no reply from unit %d", unit)
	case CauseGateway:
		return fmt.Sprintf("gateway reached no unit %d", unit)
	case CauseException:
		return fmt.Sprintf("unit %d refused the request", unit)
	case CauseGarbled:
		return "garbled replies"
	case CauseClosed:
		return "connection closed"
	}
	return ""
}
