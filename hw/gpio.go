package hw

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/host/v3"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
)

// edgeWait bounds each wait for an edge, so a watcher notices its context
// ending and re-reads the level in case an edge was lost.
const edgeWait = 200 * time.Millisecond

// WatchEStop watches an emergency-stop input until ctx ends. It calls
// changed with the initial state and then on every change, straight from
// the pin's edge interrupt: the stop is not sampled at the poll rate.
// activeHigh says a high level means engaged; otherwise low does, with a
// pull-up, so a cut wire engages the stop too. changed must not block.
func WatchEStop(ctx context.Context, pin gpio.PinIn, activeHigh bool, changed func(engaged bool)) error {
	pull := gpio.PullUp
	if activeHigh {
		pull = gpio.PullDown
	}
	if err := pin.In(pull, gpio.BothEdges); err != nil {
		return fmt.Errorf("e-stop input %s: %w", pin, err)
	}
	engaged := func() bool { return (pin.Read() == gpio.High) == activeHigh }
	state := engaged()
	changed(state)
	for ctx.Err() == nil {
		pin.WaitForEdge(edgeWait)
		if now := engaged(); now != state {
			state = now
			changed(state)
		}
	}
	return nil
}

// Outputs drives the optional contactor and status LED from the safety
// state. Either pin may be nil.
type Outputs struct {
	Contactor gpio.PinOut
	StatusLED gpio.PinOut
}

// OpenOutputs finds the contactor and status LED pins by their names (""
// for a pin not used). A pin that cannot be found is left out, and its
// error returned with the others.
func OpenOutputs(contactor, statusLED string) (Outputs, error) {
	var o Outputs
	var errs []error
	if contactor != "" {
		if pin, err := PinByName(contactor); err != nil {
			errs = append(errs, fmt.Errorf("gpio.contactor: %w", err))
		} else {
			o.Contactor = pin
		}
	}
	if statusLED != "" {
		if pin, err := PinByName(statusLED); err != nil {
			errs = append(errs, fmt.Errorf("gpio.status_led: %w", err))
		} else {
			o.StatusLED = pin
		}
	}
	return o, errors.Join(errs...)
}

// None reports whether no output pin is driven.
func (o Outputs) None() bool { return o.Contactor == nil && o.StatusLED == nil }

// Set closes the contactor (high) unless the e-stop is engaged, and lights
// the LED while safety is ok.
func (o Outputs) Set(estop bool, safetyOK bool) error {
	if o.Contactor != nil {
		if err := o.Contactor.Out(gpio.Level(!estop)); err != nil {
			return fmt.Errorf("contactor %s: %w", o.Contactor, err)
		}
	}
	if o.StatusLED != nil {
		if err := o.StatusLED.Out(gpio.Level(safetyOK && !estop)); err != nil {
			return fmt.Errorf("status LED %s: %w", o.StatusLED, err)
		}
	}
	return nil
}

// hostInit loads periph's host drivers (sysfs and the SoC's GPIO chips)
// once, the first time a pin is asked for, so a gateway without GPIO
// config never touches them.
var hostInit = sync.OnceValue(func() error {
	_, err := host.Init()
	return err
})

// PinByName finds a GPIO pin by its periph name (GPIO17, or a header
// position such as P1_11) after loading the host's drivers.
func PinByName(name string) (gpio.PinIO, error) {
	if err := hostInit(); err != nil {
		return nil, fmt.Errorf("gpio drivers: %w", err)
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("gpio pin %q not found (no GPIO driver has registered it)", name)
	}
	return p, nil
}

// EStop watches an emergency-stop input by name (WatchEStop) on a
// goroutine of its own. A pin that cannot be found or set up counts as an
// engaged stop: changed(true), and the failure told to failed.
type EStop struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartEStop watches the pin named name until Close; changed is told the
// stop's state, failed why the input cannot be watched (it then holds the
// stop engaged). Neither may block.
func StartEStop(name string, activeHigh bool, changed func(engaged bool), failed func(error)) *EStop {
	e := &EStop{}
	pin, err := PinByName(name)
	if err != nil {
		failed(fmt.Errorf("gpio.estop: %w", err))
		changed(true)
		return e
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Go(func() {
		if err := WatchEStop(ctx, pin, activeHigh, changed); err != nil {
			failed(err)
			changed(true)
		}
	})
	return e
}

// Close stops watching and waits.
func (e *EStop) Close() {
	if e.cancel != nil {
		e.cancel()
	}
	e.wg.Wait()
}
