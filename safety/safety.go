// Package safety is the one path from "someone wants power X" to a device
// write. It holds the local limits, validates setpoint leases, clamps and
// ramps, and produces Approved values: the only thing drivers accept for a
// write. Approved's fields are unexported, so no other package can make one.
//
// Everything here that depends on time takes the time as an argument: the
// evaluator and the lease checks are pure, so tests drive them with any
// clock they like.
//
// safety is pure: it imports only the root package and the standard
// library, does no I/O and starts no goroutine. Hardware (GPIO, watchdogs)
// is package hw's.
package safety

import (
	"fmt"

	"github.com/hearth-energy/hearth"
)

// Approved is a command that has passed every limit. Only this package can
// construct one; drivers write nothing else. The zero value approves
// nothing: drivers refuse it.
type Approved struct {
	device string
	mode   hearth.Mode
	power  hearth.Watts
	rule   hearth.Rule
}

// Device is the device the command is for.
func (a Approved) Device() string { return a.device }

// Mode is the approved mode: ModeAuto hands control back to the device's
// own logic, ModePower holds Power. No other mode is ever approved.
func (a Approved) Mode() hearth.Mode { return a.mode }

// Power is the approved battery power (positive discharges). It is 0 in
// ModeAuto.
func (a Approved) Power() hearth.Watts { return a.power }

// Rule names the rule that bound the command, or "" when nothing did.
func (a Approved) Rule() hearth.Rule { return a.rule }

// Valid reports whether a was made by this package's evaluator, as opposed
// to being the zero value.
func (a Approved) Valid() bool {
	return a.device != "" && (a.mode == hearth.ModeAuto || a.mode == hearth.ModePower)
}

// Equal reports whether two approvals ask the device for the same thing.
func (a Approved) Equal(b Approved) bool {
	return a.device == b.device && a.mode == b.mode && a.power == b.power
}

func (a Approved) String() string {
	if a.mode == hearth.ModeAuto {
		return fmt.Sprintf("%s: auto", a.device)
	}
	return fmt.Sprintf("%s: %.0f W", a.device, float64(a.power))
}

// Release approves handing a device back to its own logic. Giving up
// control is always allowed: it is the state a dead agent leaves behind
// too, once the device's revert timer runs out.
func Release(device string) Approved {
	return Approved{device: device, mode: hearth.ModeAuto, rule: hearth.RuleRelease}
}
