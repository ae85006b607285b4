package hw

import (
	"fmt"
	"net"
	"strings"
)

// Notifier speaks systemd's notify protocol (sd_notify): one datagram per
// message, such as "READY=1" or "WATCHDOG=1", on the socket systemd names
// in NOTIFY_SOCKET. It is independent of the hardware watchdog: a unit of
// Type=notify must hear READY=1 whether or not /dev/watchdog can be opened.
type Notifier struct {
	conn *net.UnixConn // nil: not run by systemd with a notify socket
}

// OpenNotifier connects to the notify socket at socket (a leading '@'
// means the abstract namespace, as systemd writes it). An empty socket
// gives a Notifier that sends nothing. The caller owns it and must Close it.
func OpenNotifier(socket string) (*Notifier, error) {
	if socket == "" {
		return &Notifier{}, nil
	}
	name := socket
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("systemd notify socket %s: %w", socket, err)
	}
	return &Notifier{conn: c}, nil
}

// Notify sends one message. It does nothing without a notify socket.
func (n *Notifier) Notify(msg string) error {
	if n == nil || n.conn == nil {
		return nil
	}
	if _, err := n.conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("notify systemd %q: %w", msg, err)
	}
	return nil
}

// Close closes the socket. It sends nothing: say STOPPING=1 when the
// shutdown begins.
func (n *Notifier) Close() error {
	if n == nil || n.conn == nil {
		return nil
	}
	return n.conn.Close()
}
