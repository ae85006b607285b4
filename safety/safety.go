// Package safety is the one path from "someone wants power X" to a device
// write. It holds the local limits, validates setpoint leases, clamps and
// ramps, and produces Approved values: the only thing drivers accept for a
// write. Approved's fields are unexported, so no other package can make one.
//
// safety imports only the root package and the standard library.
package safety

import "github.com/hearth-energy/hearth"

// Approved is a command that has passed every limit. Only this package can
// construct one; drivers write nothing else.
type Approved struct {
	device string
	mode   hearth.Mode
	power  hearth.Watts
}

// Device is the device the command is for.
func (a Approved) Device() string { return a.device }

// Mode is the approved mode; ModeAuto hands control back to the device.
func (a Approved) Mode() hearth.Mode { return a.mode }

// Power is the approved battery power (positive discharges).
func (a Approved) Power() hearth.Watts { return a.power }
