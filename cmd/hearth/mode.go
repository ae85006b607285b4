package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
)

const modeUsage = "usage: hearth mode get | hearth mode set idle|auto --for DURATION | hearth mode set power WATTS --for DURATION | hearth mode clear"

// ModeReport is what `hearth mode get --json` prints: the mode the agent
// runs, the power it commands, and the lease that sets them (none: the
// fallback).
type ModeReport struct {
	Mode     string            `json:"mode"`
	AppliedW *hearth.Watts     `json:"applied_w,omitempty"`
	Safety   string            `json:"safety"`
	Lease    *diag.LeaseReport `json:"lease"`
}

// cmdMode is `hearth mode set idle|auto --for 30m`, `hearth mode set power
// -500W --for 2m` and `hearth mode clear`: a local lease for field work,
// or a small test power to check sign and wiring. It passes the agent's
// safety like any setpoint, and the cloud sees it as a local lease in
// …/state.
func cmdMode(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth mode", stderr)
	var f diagFlags
	f.register(fs)
	dur := fs.String("for", "", "how long the local mode holds (e.g. 30m; at most 12h, 15m for a power)")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	usage := func() int {
		fmt.Fprintln(stderr, modeUsage)
		return exitUsage
	}
	if len(pos) == 0 {
		return usage()
	}
	c := diag.NewClient(f.socketPath())
	switch {
	case pos[0] == "set" && (len(pos) == 2 || len(pos) == 3 && pos[1] == string(hearth.ModePower)):
		req := diag.ModeRequest{Mode: hearth.Mode(pos[1]), For: *dur}
		if req.Mode == hearth.ModePower {
			if len(pos) != 3 {
				fmt.Fprintln(stderr, "hearth mode set power: give the power, e.g. -500W (negative charges, positive discharges)")
				return exitUsage
			}
			w, err := parseWatts(pos[2])
			if err != nil {
				fmt.Fprintf(stderr, "hearth mode set power: %v\n", err)
				return exitUsage
			}
			req.PowerW = &w
		}
		if *dur == "" {
			fmt.Fprintln(stderr, "hearth mode set: --for is required, so a forgotten override ends by itself")
			return exitUsage
		}
		ack, err := setMode(c, req)
		if err != nil {
			return fail(stderr, "mode set", err)
		}
		if f.json {
			writeJSON(stdout, ack)
		} else {
			fmt.Fprintln(stdout, modeLine(req, ack))
		}
		if ack.Result != hearth.ResultApplied && ack.Result != hearth.ResultClamped {
			return exitFailed
		}
		return exitOK
	case pos[0] == "get" && len(pos) == 1:
		var st diag.StatusReport
		if err := c.Do("GET", "/status", nil, nil, &st); err != nil {
			return fail(stderr, "mode get", err)
		}
		r := ModeReport{Mode: st.Safety.Mode, AppliedW: st.Safety.AppliedW, Safety: st.Safety.State, Lease: st.Lease}
		if f.json {
			writeJSON(stdout, r)
			return exitOK
		}
		line := "mode " + r.Mode
		if r.AppliedW != nil {
			line += ", commanding " + watts(float64(*r.AppliedW))
		}
		switch l := r.Lease; {
		case l == nil:
			line += ": the fallback, no lease"
		default:
			line += fmt.Sprintf(": %s lease %s, %s left, then %s", l.Source, l.ID, diag.Age(time.Duration(l.RemainingS*float64(time.Second))), l.Fallback)
		}
		if r.Safety != "" && r.Safety != "ok" {
			line += "; safety holds it: " + r.Safety
		}
		fmt.Fprintln(stdout, line)
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

// setMode asks the agent for a local mode.
func setMode(c *diag.Client, req diag.ModeRequest) (hearth.Ack, error) {
	var ack hearth.Ack
	err := c.Do("POST", "/mode", nil, req, &ack)
	return ack, err
}

// modeLine says what became of a local mode.
func modeLine(req diag.ModeRequest, ack hearth.Ack) string {
	what := string(req.Mode)
	if req.PowerW != nil {
		what += " " + watts(float64(*req.PowerW))
	}
	line := fmt.Sprintf("mode %s for %s: %s", what, req.For, ack.Result)
	if ack.Reason != "" {
		line += " (" + string(ack.Reason) + ")"
	}
	if ack.AppliedW != nil && ack.Result == hearth.ResultClamped {
		line += ", holding " + watts(float64(*ack.AppliedW))
	}
	return line
}

// parseWatts reads a power as a tech types it: -500W, -500, 1.5kW.
func parseWatts(s string) (hearth.Watts, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	switch {
	case strings.HasSuffix(strings.ToLower(t), "kw"):
		t, mult = t[:len(t)-2], 1000
	case strings.HasSuffix(strings.ToLower(t), "w"):
		t = t[:len(t)-1]
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("power %q: want watts such as -500W or 1.5kW (negative charges)", s)
	}
	return hearth.Watts(v * mult), nil
}
