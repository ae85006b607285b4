package main

import (
	"cmp"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/hearth-energy/hearth/diag"
)

const deviceUsage = "usage: hearth device probe NAME [--json]"

// cmdDevice is `hearth device probe NAME`: the link asks a device marked
// down at once instead of at its next probe, and the device's state after
// the next poll is printed. Exit 0 when it answers, 1 when not.
func cmdDevice(args []string, stdout, stderr io.Writer) int {
	if code, ok := subcommand(args, "probe", deviceUsage, stdout, stderr); !ok {
		return code
	}
	fs := newFlags("hearth device probe", stderr)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), deviceUsage+"\n\nflags:"); fs.PrintDefaults() }
	var f diagFlags
	f.register(fs)
	pos, code, ok := parseArgs(fs, args[1:], stdout)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, deviceUsage)
		return exitUsage
	}
	c := diag.NewClient(f.socketPath()).WithTimeout(diag.RequestTimeout + 35*time.Second)
	var res diag.ProbeResult
	if err := c.Do("POST", "/devices/"+url.PathEscape(pos[0])+"/probe", nil, nil, &res); err != nil {
		return fail(stderr, "device probe", err)
	}
	d := res.Device
	if f.json {
		writeJSON(stdout, res)
	} else {
		switch {
		case d.Up && res.WasDown:
			fmt.Fprintf(stdout, "%s answers again (%s %s unit %d)\n", d.Name, d.Transport, d.Address, d.UnitID)
		case d.Up:
			fmt.Fprintf(stdout, "%s answers (%s %s unit %d); it was not down\n", d.Name, d.Transport, d.Address, d.UnitID)
		default:
			fmt.Fprintf(stdout, "%s does not answer: %s\n", d.Name, cmp.Or(diag.CauseLabel(d.Cause, d.UnitID), d.LastError))
			if d.Hint != "" {
				fmt.Fprintf(stdout, "  %s\n", d.Hint)
			}
			if d.NextProbe != nil {
				fmt.Fprintf(stdout, "  next probe in %s\n", diag.Age(time.Until(*d.NextProbe)))
			}
		}
	}
	if !d.Up {
		return exitFailed
	}
	return exitOK
}
