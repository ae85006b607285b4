package main

import (
	"fmt"
	"io"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
)

// cmdMode is `hearth mode set idle|auto --for 30m` and `hearth mode clear`:
// a local lease for field work. It passes the agent's safety like any
// setpoint, and the cloud sees it as a local lease in …/state.
func cmdMode(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth mode", stderr)
	var f diagFlags
	f.register(fs)
	dur := fs.String("for", "", "how long the local mode holds (e.g. 30m; at most 12h)")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	usage := func() int {
		fmt.Fprintln(stderr, "usage: hearth mode set idle|auto --for DURATION | hearth mode clear")
		return exitUsage
	}
	if len(pos) == 0 {
		return usage()
	}
	c := diag.NewClient(f.socketPath())
	switch {
	case pos[0] == "set" && len(pos) == 2:
		if *dur == "" {
			fmt.Fprintln(stderr, "hearth mode set: --for is required, so a forgotten override ends by itself")
			return exitUsage
		}
		var ack hearth.Ack
		req := diag.ModeRequest{Mode: hearth.Mode(pos[1]), For: *dur}
		if err := c.Do("POST", "/mode", nil, req, &ack); err != nil {
			return fail(stderr, "mode set", err)
		}
		if f.json {
			writeJSON(stdout, ack)
		} else {
			line := fmt.Sprintf("mode %s for %s: %s", pos[1], *dur, ack.Result)
			if ack.Reason != "" {
				line += " (" + ack.Reason + ")"
			}
			fmt.Fprintln(stdout, line)
		}
		if ack.Result != hearth.ResultApplied && ack.Result != hearth.ResultClamped {
			return exitFailed
		}
		return exitOK
	case pos[0] == "clear" && len(pos) == 1:
		var out map[string]string
		if err := c.Do("DELETE", "/mode", nil, nil, &out); err != nil {
			return fail(stderr, "mode clear", err)
		}
		if f.json {
			writeJSON(stdout, out)
		} else {
			fmt.Fprintln(stdout, "local mode cleared: the cloud lease or the fallback applies again")
		}
		return exitOK
	}
	return usage()
}
