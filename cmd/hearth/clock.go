package main

import (
	"fmt"
	"io"
	"time"

	"github.com/hearth-energy/hearth/diag"
)

// cmdClock is `hearth clock reset-floor --confirm GATEWAY_ID`: the way out,
// at the gateway, of a floor under true time so far ahead that every lease
// is expired (docs/safety.md, "Time"). It needs the diagnostics socket and
// the gateway's id typed out, like lease reset-version.
func cmdClock(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: hearth clock reset-floor --confirm GATEWAY_ID [--json]\n" +
		"  sets the floor under true time back to the binary's build time; leases are judged\n" +
		"  by it again (a floor ahead of true time expires every lease)"
	if code, ok := subcommand(args, "reset-floor", usage, stdout, stderr); !ok {
		return code
	}
	fs := newFlags("hearth clock reset-floor", stderr)
	var res diag.ResetFloorResult
	asJSON, code, ok := postConfirmed(fs, args[1:], "/clock/reset-floor", "after the reset the floor is the build time, and leases are judged by it", &res, stdout, stderr)
	if !ok {
		return code
	}
	if asJSON {
		writeJSON(stdout, res)
		return exitOK
	}
	fmt.Fprintf(stdout, "clock floor reset from %s to %s\n", floorText(res.From), floorText(res.To))
	return exitOK
}

func floorText(t *time.Time) string {
	if t == nil {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}
