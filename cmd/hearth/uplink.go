package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/hearth-energy/hearth/diag"
)

// cmdUplink is `hearth uplink reconnect`: connect to the broker now
// instead of waiting out the boot delay or the backoff, and wait (up to
// --wait) to see whether it worked.
func cmdUplink(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: hearth uplink reconnect [--wait 30s] [--json]"
	if code, ok := subcommand(args, "reconnect", usage, stdout, stderr); !ok {
		return code
	}
	fs := newFlags("hearth uplink reconnect", stderr)
	var f diagFlags
	f.register(fs)
	waitFor := fs.Duration("wait", 30*time.Second, "how long to wait for the connection (0: ask and return)")
	if code, ok := parseNoArgs(fs, args[1:], stdout, stderr); !ok {
		return code
	}
	c := diag.NewClient(f.socketPath())
	var res diag.ReconnectResult
	if err := c.Do("POST", "/uplink/reconnect", nil, nil, &res); err != nil {
		return fail(stderr, "uplink reconnect", err)
	}
	var up diag.UplinkReport
	deadline := time.Now().Add(*waitFor)
	for {
		var st diag.StatusReport
		if err := c.Do("GET", "/status", nil, nil, &st); err != nil {
			return fail(stderr, "uplink reconnect", err)
		}
		up = st.Uplink
		if up.Connected || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if f.json {
		b, _ := json.Marshal(up)
		stdout.Write(append(b, '\n'))
	}
	switch {
	case up.Connected:
		if !f.json {
			fmt.Fprintf(stdout, "uplink connected to %s\n", up.Broker)
		}
		return exitOK
	case *waitFor == 0:
		if !f.json {
			fmt.Fprintf(stdout, "uplink: attempting to connect to %s\n", up.Broker)
		}
		return exitOK
	}
	msg := fmt.Sprintf("hearth uplink reconnect: not connected to %s within %s", up.Broker, *waitFor)
	if up.LastError != "" {
		msg += ": " + up.LastError
	}
	fmt.Fprintln(stderr, msg)
	fmt.Fprintln(stderr, "  check the broker address and port, the network, and the certificates: `hearth config check --online`")
	return exitFailed
}
