package hw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// Watchdog is the Linux hardware watchdog (/dev/watchdog): once opened,
// the machine reboots unless it is fed within the driver's timeout.
type Watchdog struct {
	dev io.WriteCloser
}

// OpenWatchdog opens the hardware watchdog at device. The caller owns it
// and must Close it, which disarms it.
func OpenWatchdog(device string) (*Watchdog, error) {
	f, err := os.OpenFile(device, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("hardware watchdog: %w", err)
	}
	return &Watchdog{dev: f}, nil
}

// Feed pets the watchdog once.
func (w *Watchdog) Feed() error {
	if _, err := w.dev.Write([]byte{'1'}); err != nil {
		return fmt.Errorf("feed hardware watchdog: %w", err)
	}
	return nil
}

// Close disarms the watchdog with the magic close character, so a clean
// stop is not taken for a hang, and closes the device.
func (w *Watchdog) Close() error {
	_, err := w.dev.Write([]byte{'V'})
	return errors.Join(err, w.dev.Close())
}

// Feeder feeds the hardware watchdog and systemd's watchdog, but only
// while healthy says the local loops are running. Nothing about the cloud
// connection goes into healthy: an outage must never restart the gateway,
// while a hung poll or control loop must.
type Feeder struct {
	hw       *Watchdog // nil: no hardware watchdog
	notify   *Notifier // nil: no systemd watchdog
	interval time.Duration
	healthy  func() bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewFeeder feeds hw and notify (either may be nil) every interval,
// shortened to half of watchdogUSec when systemd asks for that
// (WATCHDOG_USEC). It feeds nothing until Start.
func NewFeeder(hw *Watchdog, notify *Notifier, interval time.Duration, watchdogUSec string, healthy func() bool) *Feeder {
	f := &Feeder{hw: hw, notify: notify, interval: interval, healthy: healthy}
	if usec, err := strconv.ParseInt(watchdogUSec, 10, 64); err == nil && usec > 0 {
		f.interval = min(f.interval, time.Duration(usec)*time.Microsecond/2)
	}
	return f
}

// Interval is how often the feeder feeds.
func (f *Feeder) Interval() time.Duration { return f.interval }

// Feed pets both watchdogs once if healthy says so, and reports whether it
// did.
func (f *Feeder) Feed() (bool, error) {
	if !f.healthy() {
		return false, nil
	}
	var errs []error
	if f.hw != nil {
		errs = append(errs, f.hw.Feed())
	}
	errs = append(errs, f.notify.Notify("WATCHDOG=1"))
	return true, errors.Join(errs...)
}

// Start feeds every interval, on a goroutine of its own, until Close.
// onErr is told of every failed feed.
func (f *Feeder) Start(onErr func(error)) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Go(func() {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		for {
			if _, err := f.Feed(); err != nil && onErr != nil {
				onErr(err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// Close stops feeding and waits for the feeding goroutine. It closes
// neither watchdog: their owner does.
func (f *Feeder) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}
