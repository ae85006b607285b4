package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hearth-energy/hearth/diag"
)

// Exit codes of the commands that talk to a running diag.
const (
	exitNoAgent   = 4 // no agent answers on the socket
	exitNoAccess  = 5 // the socket exists but this user may not use it
	exitDegraded  = 6 // `hearth status`: the agent runs but something is wrong
	defaultSocket = "/run/hearth/hearth.sock"
)

// diagFlags are the flags every command that talks to the agent takes.
type diagFlags struct {
	socket string
	config string
	json   bool
}

func (f *diagFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.socket, "socket", "", "diagnostics socket (default: $HEARTH_SOCKET, then diag_socket in --config, then "+defaultSocket+")")
	fs.StringVar(&f.config, "config", defaultPath, "config file to read diag_socket from")
	fs.BoolVar(&f.json, "json", false, "print JSON (stable, documented in docs/diagnostics.md)")
}

// socketPath finds the socket: --socket, $HEARTH_SOCKET, diag_socket in the
// config file, the default. A config that cannot be read is not an error
// here: the tech may have none on this laptop.
func (f *diagFlags) socketPath() string {
	if f.socket != "" {
		return f.socket
	}
	if s := os.Getenv("HEARTH_SOCKET"); s != "" {
		return s
	}
	if data, err := os.ReadFile(f.config); err == nil {
		var c struct {
			DiagSocket string `yaml:"diag_socket"`
		}
		if yaml.Unmarshal(data, &c) == nil && c.DiagSocket != "" {
			return c.DiagSocket
		}
	}
	return defaultSocket
}

// cliError is an error with the exit code it should end the command with.
type cliError struct {
	code int
	msg  string
}

func (e *cliError) Error() string { return e.msg }

// fail prints err on stderr and returns its exit code.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "hearth %s: %v\n", cmd, err)
	var ce *cliError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, diag.ErrNoAccess):
		return exitNoAccess
	case errors.Is(err, diag.ErrNoAgent):
		return exitNoAgent
	}
	return exitFailed
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth status", stderr)
	var f diagFlags
	f.register(fs)
	watch := fs.Bool("watch", false, "refresh every second")
	wide := fs.Bool("wide", false, "show every error whole, and each device's link, beyond 80 columns")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	c := diag.NewClient(f.socketPath())
	once := func(w io.Writer) int {
		var raw json.RawMessage
		if err := c.Do("GET", "/status", nil, nil, &raw); err != nil {
			return fail(stderr, "status", err)
		}
		var st diag.StatusReport
		if err := json.Unmarshal(raw, &st); err != nil {
			return fail(stderr, "status", err)
		}
		if f.json {
			w.Write(raw)
		} else {
			renderStatus(w, st, time.Now(), *wide)
		}
		if st.Verdict != "OK" {
			return exitDegraded
		}
		return exitOK
	}
	if *watch {
		return watchInPlace(stdout, once)
	}
	return once(stdout)
}

// watchInPlace redraws once() every second until the agent goes away.
func watchInPlace(stdout io.Writer, once func(io.Writer) int) int {
	for {
		var buf bytes.Buffer
		code := once(&buf)
		fmt.Fprint(stdout, "\x1b[H\x1b[2J")
		stdout.Write(buf.Bytes())
		if code == exitNoAgent || code == exitNoAccess {
			return code
		}
		time.Sleep(time.Second)
	}
}

func cmdPoints(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth points", stderr)
	var f diagFlags
	f.register(fs)
	watch := fs.Bool("watch", false, "refresh every second")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	q := url.Values{}
	if len(pos) > 1 {
		fmt.Fprintln(stderr, "usage: hearth points [DEVICE] [--json] [--watch]")
		return exitUsage
	}
	if len(pos) == 1 {
		q.Set("device", pos[0])
	}
	c := diag.NewClient(f.socketPath())
	once := func(w io.Writer) int {
		var raw json.RawMessage
		if err := c.Do("GET", "/points", q, nil, &raw); err != nil {
			return fail(stderr, "points", err)
		}
		if f.json {
			w.Write(raw)
			return exitOK
		}
		var pts []diag.PointReport
		if err := json.Unmarshal(raw, &pts); err != nil {
			return fail(stderr, "points", err)
		}
		renderPoints(w, pts)
		return exitOK
	}
	if *watch {
		return watchInPlace(stdout, once)
	}
	return once(stdout)
}

func cmdEvents(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth events", stderr)
	var f diagFlags
	f.register(fs)
	since := fs.String("since", "", "only events newer than this (e.g. 10m, 2h)")
	typ := fs.String("type", "", "only events of this type (e.g. trip, gap, uplink_lost)")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	q := url.Values{}
	if *since != "" {
		if _, err := time.ParseDuration(*since); err != nil {
			fmt.Fprintf(stderr, "hearth events: --since %q: want a duration such as 10m or 2h\n", *since)
			return exitUsage
		}
		q.Set("since", *since)
	}
	if *typ != "" {
		if err := diag.CheckEventType(*typ); err != nil {
			fmt.Fprintf(stderr, "hearth events: --type: %v\n", err)
			return exitUsage
		}
		q.Set("type", *typ)
	}
	var raw json.RawMessage
	if err := diag.NewClient(f.socketPath()).Do("GET", "/events", q, nil, &raw); err != nil {
		return fail(stderr, "events", err)
	}
	if f.json {
		stdout.Write(raw)
		return exitOK
	}
	var evs []diag.EventReport
	if err := json.Unmarshal(raw, &evs); err != nil {
		return fail(stderr, "events", err)
	}
	renderEvents(stdout, evs, time.Now())
	return exitOK
}

func cmdBuffer(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth buffer", stderr)
	var f diagFlags
	f.register(fs)
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	var raw json.RawMessage
	if err := diag.NewClient(f.socketPath()).Do("GET", "/buffer", nil, nil, &raw); err != nil {
		return fail(stderr, "buffer", err)
	}
	if f.json {
		stdout.Write(raw)
		return exitOK
	}
	var b diag.BufferReport
	if err := json.Unmarshal(raw, &b); err != nil {
		return fail(stderr, "buffer", err)
	}
	renderBuffer(stdout, b, time.Now())
	return exitOK
}

func cmdLease(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "reset-version" {
		return cmdResetVersion(args[1:], stdout, stderr)
	}
	fs := newFlags("hearth lease", stderr)
	var f diagFlags
	f.register(fs)
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	var raw json.RawMessage
	if err := diag.NewClient(f.socketPath()).Do("GET", "/lease", nil, nil, &raw); err != nil {
		return fail(stderr, "lease", err)
	}
	if f.json {
		stdout.Write(raw)
		return exitOK
	}
	var l *diag.LeaseReport
	if err := json.Unmarshal(raw, &l); err != nil {
		return fail(stderr, "lease", err)
	}
	renderLease(stdout, l, time.Now())
	return exitOK
}

// cmdResetVersion is `hearth lease reset-version --confirm GATEWAY_ID`: the
// way out of a version lockout (a lease accepted at a version so high that
// no later one fits). It needs the diagnostics socket, on the gateway, and
// the gateway's id typed out.
func cmdResetVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth lease reset-version", stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hearth lease reset-version --confirm GATEWAY_ID\n\nflags:")
		fs.PrintDefaults()
	}
	var res diag.ResetVersionResult
	asJSON, code, ok := postConfirmed(fs, args, "/lease/reset-version", "after the reset the gateway accepts lease versions from 1 again", &res, stdout, stderr)
	if !ok {
		return code
	}
	if asJSON {
		writeJSON(stdout, res)
	} else {
		fmt.Fprintf(stdout, "setpoint version reset (was %d): the cloud may number leases from 1 again\n", res.FromVersion)
	}
	return exitOK
}

// postConfirmed runs the part that the commands resetting something the
// agent holds (lease reset-version, clock reset-floor) share: it parses
// fs (the diagnostics flags and --confirm GATEWAY_ID, which must be
// given: why says what the reset does), posts the confirmation to path
// and decodes the answer into res. When ok is false, the command ends
// with code.
func postConfirmed(fs *flag.FlagSet, args []string, path, why string, res any, stdout, stderr io.Writer) (asJSON bool, code int, ok bool) {
	var f diagFlags
	f.register(fs)
	confirm := fs.String("confirm", "", "this gateway's id, to confirm the reset")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return false, code, false
	}
	if *confirm == "" {
		fmt.Fprintf(stderr, "%s: give --confirm GATEWAY_ID: %s\n", fs.Name(), why)
		return false, exitUsage, false
	}
	if err := diag.NewClient(f.socketPath()).Do("POST", path, nil, diag.ConfirmRequest{Confirm: *confirm}, res); err != nil {
		return false, fail(stderr, strings.TrimPrefix(fs.Name(), "hearth "), err), false
	}
	return f.json, exitOK, true
}

// cmdKeys is `hearth keys` (the setpoint keys in force) and `hearth keys
// reload` (read them again from the config file, as SIGHUP does).
func cmdKeys(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth keys", stderr)
	var f diagFlags
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hearth keys [reload] [--json]\n\nflags:")
		fs.PrintDefaults()
	}
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	method, path := "GET", "/keys"
	switch {
	case len(pos) == 0:
	case len(pos) == 1 && pos[0] == "reload":
		method, path = "POST", "/keys/reload"
	default:
		fmt.Fprintln(stderr, "usage: hearth keys [reload] [--json]")
		return exitUsage
	}
	var rep diag.KeysReport
	if err := diag.NewClient(f.socketPath()).Do(method, path, nil, nil, &rep); err != nil {
		return fail(stderr, "keys", err)
	}
	if f.json {
		writeJSON(stdout, rep)
		return exitOK
	}
	switch {
	case len(rep.Keys) == 0 && rep.Closed:
		fmt.Fprintln(stdout, "keys     none in force: every setpoint is refused (no_keys) until a key is configured")
	case len(rep.Keys) == 0:
		fmt.Fprintln(stdout, "keys     none: unsigned setpoints are accepted")
	default:
		fmt.Fprintln(stdout, "keys    ", strings.Join(rep.Keys, ", "))
	}
	if len(rep.Revoked) > 0 {
		fmt.Fprintln(stdout, "revoked ", strings.Join(rep.Revoked, ", "))
	}
	if rep.LeaseEnded {
		fmt.Fprintln(stdout, "the running lease was signed by a revoked key and has ended")
	}
	return exitOK
}

func cmdLogLevel(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth log-level", stderr)
	var f diagFlags
	f.register(fs)
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: hearth log-level debug|info|warn|error")
		return exitUsage
	}
	var out map[string]string
	if err := diag.NewClient(f.socketPath()).Do("PUT", "/log-level", nil, map[string]string{"level": pos[0]}, &out); err != nil {
		return fail(stderr, "log-level", err)
	}
	if f.json {
		writeJSON(stdout, out)
	} else {
		fmt.Fprintln(stdout, "log level:", out["level"])
	}
	return exitOK
}
