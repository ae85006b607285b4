package diag

import (
	"fmt"
	"slices"
	"strings"
)

// EventTypes is the catalogue of event types the agent records, in the
// order docs/events.md lists them. Each has a JSON Schema in
// docs/schemas/events/TYPE.json; the contract tests hold the catalogue, the
// schemas and what a real agent publishes to one another.
var EventTypes = []string{
	"lease_started", "lease_ended", "setpoint_rejected", "keys_reloaded", "version_reset",
	"clamped", "trip", "trip_cleared", "not_effective", "effective", "write_failed",
	"clock_stepped", "clock_floor_distrusted", "clock_floor_reset",
	"device_down", "device_up",
	"uplink_connected", "uplink_lost",
	"gap", "events_dropped", "disk_full", "buffer_corrupt",
}

// CheckEventType returns nil for a type in EventTypes, else an error
// naming the known ones.
func CheckEventType(typ string) error {
	if slices.Contains(EventTypes, typ) {
		return nil
	}
	return fmt.Errorf("unknown event type %q (known: %s)", typ, strings.Join(EventTypes, ", "))
}
