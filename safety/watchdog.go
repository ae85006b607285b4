package safety

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Watchdog feeds the Linux hardware watchdog and systemd's watchdog, but
// only while healthy says the local loops are running. Nothing about the
// cloud connection goes into healthy: an outage must never restart the
// gateway, while a hung poll or control loop must.
type Watchdog struct {
	hw       io.WriteCloser // nil: no hardware watchdog
	notify   *net.UnixConn  // nil: not run by systemd with a notify socket
	interval time.Duration
	healthy  func() bool
}

// OpenWatchdog opens the hardware watchdog at device (none when empty) and
// the systemd notify socket named by notifySocket (none when empty; a
// leading '@' means the abstract namespace, as systemd writes it). The
// feed interval is interval, shortened to half of watchdogUSec when
// systemd asks for that (WATCHDOG_USEC). The caller owns the Watchdog and
// must Close it.
func OpenWatchdog(device, notifySocket, watchdogUSec string, interval time.Duration, healthy func() bool) (*Watchdog, error) {
	w := &Watchdog{interval: interval, healthy: healthy}
	if usec, err := strconv.ParseInt(watchdogUSec, 10, 64); err == nil && usec > 0 {
		w.interval = min(w.interval, time.Duration(usec)*time.Microsecond/2)
	}
	if notifySocket != "" {
		name := notifySocket
		if strings.HasPrefix(name, "@") {
			name = "\x00" + name[1:]
		}
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			return nil, fmt.Errorf("systemd notify socket %s: %w", notifySocket, err)
		}
		w.notify = c
	}
	if device != "" {
		f, err := os.OpenFile(device, os.O_WRONLY, 0)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("hardware watchdog: %w", err)
		}
		w.hw = f
	}
	return w, nil
}

// Notify sends one sd_notify message, such as "READY=1". It does nothing
// without a notify socket.
func (w *Watchdog) Notify(msg string) error {
	if w.notify == nil {
		return nil
	}
	_, err := w.notify.Write([]byte(msg))
	return err
}

// Feed pets both watchdogs once if healthy says so, and reports whether it
// did.
func (w *Watchdog) Feed() (bool, error) {
	if !w.healthy() {
		return false, nil
	}
	var errs []error
	if w.hw != nil {
		if _, err := w.hw.Write([]byte{'1'}); err != nil {
			errs = append(errs, fmt.Errorf("feed hardware watchdog: %w", err))
		}
	}
	if err := w.Notify("WATCHDOG=1"); err != nil {
		errs = append(errs, fmt.Errorf("notify systemd watchdog: %w", err))
	}
	return true, errors.Join(errs...)
}

// Run says READY=1, then feeds every interval until ctx ends.
func (w *Watchdog) Run(ctx context.Context, onErr func(error)) {
	if err := w.Notify("READY=1"); err != nil && onErr != nil {
		onErr(err)
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		if _, err := w.Feed(); err != nil && onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close says STOPPING=1 and disarms the hardware watchdog with the magic
// close character, so a clean stop is not taken for a hang.
func (w *Watchdog) Close() error {
	var errs []error
	if w.notify != nil {
		_ = w.Notify("STOPPING=1")
		errs = append(errs, w.notify.Close())
	}
	if w.hw != nil {
		if _, err := w.hw.Write([]byte{'V'}); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, w.hw.Close())
	}
	return errors.Join(errs...)
}
