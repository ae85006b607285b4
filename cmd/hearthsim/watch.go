package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/cloud"
	"github.com/hearth-energy/hearth/uplink"
)

func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hearthsim watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokerURL := fs.String("broker", "tcp://127.0.0.1:1883", "broker URL")
	gateway := fs.String("gateway", "+", "gateway id, or + for all")
	prefix := fs.String("prefix", "hearth/v1", "topic prefix")
	caFile := fs.String("tls-ca", "", "CA file for a tls:// broker")
	certFile := fs.String("tls-cert", "", "client certificate for a tls:// broker")
	certKey := fs.String("tls-key", "", "client certificate key")
	if code, ok := parse(fs, args, true, stdout, stderr); !ok {
		return code
	}
	opts := cloud.Options{CAFile: *caFile, CertFile: *certFile, KeyFile: *certKey}
	if err := watchWith(ctx, *brokerURL, *prefix, *gateway, opts, stdout); err != nil {
		fmt.Fprintln(stderr, "hearthsim watch:", err)
		return 1
	}
	return 0
}

// watchWith prints what gateways publish as a live table until ctx ends:
// one line per reading, and one per status, event and ack.
func watchWith(ctx context.Context, brokerURL, prefix, gateway string, opts cloud.Options, w io.Writer) error {
	var mu sync.Mutex
	header := false
	print := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !header {
			fmt.Fprintf(w, "%-8s %-10s %6s %-9s %7s %9s %8s %8s %9s  %s\n",
				"time", "gateway", "seq", "device", "SoC %", "battery W", "AC W", "grid Hz", "cell V max", "topic")
			header = true
		}
		fmt.Fprintf(w, format, a...)
	}
	return follow(ctx, brokerURL, prefix, gateway, "watch", opts, func(gw, kind string, m cloud.Message) {
		switch kind {
		case "telemetry", "telemetry/backfill":
			batch, err := uplink.DecodeTelemetry(m.Payload) // lean or json
			if err != nil {
				print("%s  bad telemetry payload: %v\n", time.Now().Format("15:04:05"), err)
				return
			}
			for _, r := range batch.Readings {
				print("%-8s %-10s %6d %-9s %7s %9s %8s %8s %9s  %s\n",
					r.Time.Local().Format("15:04:05"), gw, r.Seq, r.Device,
					cell(r.Points, "soc_pct", 2), cell(r.Points, "power_w", 0), cell(r.Points, "ac_power_w", 0),
					cell(r.Points, "ac_hz", 2), cell(r.Points, "cell_v_max", 3), kind)
			}
		case "setpoint/ack":
			var a hearth.Ack
			if err := json.Unmarshal(m.Payload, &a); err != nil {
				print("%s  bad ack payload: %v\n", time.Now().Format("15:04:05"), err)
				return
			}
			applied := "-"
			if a.AppliedW != nil {
				applied = fmt.Sprintf("%.0f", float64(*a.AppliedW))
			}
			print("%-8s %-10s ack %s v%d: %s %s applied_w=%s\n", time.Now().Format("15:04:05"), gw, a.ID, a.Version, a.Result, a.Reason, applied)
		case "setpoint":
			print("%-8s %-10s setpoint sent (%d bytes)\n", time.Now().Format("15:04:05"), gw, len(m.Payload))
		default: // status, state, event
			retained := ""
			if m.Retained {
				retained = " (retained)"
			}
			print("%-8s %-10s %s%s: %s\n", time.Now().Format("15:04:05"), gw, kind, retained, strings.TrimSpace(string(m.Payload)))
		}
	})
}

// follow calls fn with every message gateway (+ for all) publishes under
// prefix, with the gateway id and the topic after it, until ctx ends. name
// tells its client id from other tools'.
func follow(ctx context.Context, brokerURL, prefix, gateway, name string, opts cloud.Options, fn func(gw, kind string, m cloud.Message)) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := cloud.DialWith(dctx, brokerURL, fmt.Sprintf("hearthsim-%s-%d", name, time.Now().UnixNano()), opts)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.Subscribe(dctx, prefix+"/"+gateway+"/#", func(m cloud.Message) {
		gw, kind, ok := strings.Cut(strings.TrimPrefix(m.Topic, prefix+"/"), "/")
		if ok {
			fn(gw, kind, m)
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// cell formats a point for the table: its value, or its quality in brackets.
func cell(points map[string]hearth.Point, name string, decimals int) string {
	p, ok := points[name]
	switch {
	case !ok:
		return "-"
	case !p.Good():
		return "[" + string(p.Quality) + "]"
	case math.IsNaN(p.Value):
		return "NaN"
	}
	return fmt.Sprintf("%.*f", decimals, p.Value)
}
