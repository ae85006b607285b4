package diag

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hearth-energy/hearth"
)

// EventTypes is the catalogue of event types the agent records
// (hearth.EventTypes), in the order docs/events.md lists them. Each has a JSON Schema in
// docs/schemas/events/TYPE.json; the contract tests hold the catalogue, the
// schemas and what a real agent publishes to one another.
var EventTypes = func() []string {
	out := make([]string, len(hearth.EventTypes))
	for i, t := range hearth.EventTypes {
		out[i] = string(t)
	}
	return out
}()

// CheckEventType returns nil for a type in EventTypes, else an error
// naming the known ones.
func CheckEventType(typ string) error {
	if slices.Contains(EventTypes, typ) {
		return nil
	}
	return fmt.Errorf("unknown event type %q (known: %s)", typ, strings.Join(EventTypes, ", "))
}
