package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/internal/schemacheck"
)

var update = flag.Bool("update", false, "rewrite golden files")

// now is the fixed moment the golden outputs are rendered at.
var now = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	time.Local = time.UTC // golden files show times in UTC
	os.Exit(m.Run())
}

func at(d time.Duration) *time.Time { t := now.Add(-d); return &t }

func wp(w float64) *hearth.Watts { x := hearth.Watts(w); return &x }

// fixedStatus is an agent with a dead meter, a broken uplink and an active
// lease: what a tech most needs to read at a glance.
func fixedStatus() diag.StatusReport {
	return diag.StatusReport{
		Time: now,
		Agent: diag.AgentReport{Version: "v0.3.0", GatewayID: "gw-0001", Boot: "9f2c61d04ab3e871",
			UptimeS: (2*time.Hour + 13*time.Minute).Seconds(), Clock: hearth.ClockSynced, LogLevel: "INFO", LocalModes: []string{"idle", "auto"}},
		Devices: []diag.DeviceReport{
			{Name: "battery", Transport: "tcp", Address: "192.0.2.10:502", Up: true, LastOK: at(400 * time.Millisecond),
				Polls: 7812, Identity: &diag.Identity{Manufacturer: "Acme Power", Model: "HX-10", Serial: "AC2231000457"}},
			{Name: "meter", Transport: "rtu", Address: "/dev/ttyUSB0", Up: false, LastOK: at(133 * time.Second),
				UnitID: 2, Polls: 7812, Failures: 312, LastError: "read unit 2 holding 40000+2: i/o timeout", DownSinceTS: at(133 * time.Second),
				Cause: diag.CauseNoReply, Hint: "no reply from unit 2: wrong unit id? Or the serial line: A/B wiring, baud rate, parity, termination"},
		},
		Safety: diag.SafetyReport{State: "ok", Trips: []string{}, Mode: "power", AppliedW: wp(-3000)},
		Lease: &diag.LeaseReport{LeaseInfo: hearth.LeaseInfo{ID: "b7e1c2d3-0a4f", Version: 42,
			ValidUntil: now.Add(12*time.Minute + 3*time.Second), Fallback: hearth.ModeAuto, Source: "cloud", RemainingS: 723}},
		Uplink: diag.UplinkReport{Broker: "tls://mqtt.example.net:8883", Connected: false, DownSince: at(2*time.Hour + 13*time.Minute),
			Attempts: 41, LastError: "dial tcp 198.51.100.7:8883: connect: network is unreachable: an error long enough to be clipped",
			NextAttempt: at(-37 * time.Second)},
		Buffer: diag.BufferReport{PendingReadings: 7812, PendingEvents: 5, OldestPending: at(2*time.Hour + 13*time.Minute),
			FileBytes: 3 << 20, MaxBytes: 256 << 20, LastSeq: 81234, ReservedSeq: 82944, Compactions: 2, ReadingsCompacted: 7200,
			PendingAggregates: 120, WriteBytes: 41 << 20, CommitsPerHour: 3600},
		Verdict: "DEGRADED: device down: meter for 2m13s; uplink down for 2h13m, 7,812 readings buffered",
		Reasons: []string{"device down: meter for 2m13s", "uplink down for 2h13m, 7,812 readings buffered"},
	}
}

func TestHumanOutputGolden(t *testing.T) {
	st := fixedStatus()
	cases := map[string]func(*bytes.Buffer){
		"status": func(b *bytes.Buffer) { renderStatus(b, st, now, false) },
		"status_ok": func(b *bytes.Buffer) {
			s := st
			s.Devices = s.Devices[:1]
			s.Lease = nil
			s.Verdict = "OK"
			s.Uplink = diag.UplinkReport{Broker: "tls://mqtt.example.net:8883", Connected: true, ConnectedSince: at(time.Hour)}
			renderStatus(b, s, now, false)
		},
		"status_wide": func(b *bytes.Buffer) { renderStatus(b, st, now, true) },
		"status_site": func(b *bytes.Buffer) {
			// Two batteries, battery2 unreachable: the site's safety and
			// each device's.
			s := st
			s.Safety = diag.SafetyReport{State: "device_down", Trips: []string{"device_down"}, Mode: "power", AppliedW: wp(1500),
				Devices: map[string]hearth.DeviceSafety{
					"battery1": {Safety: "ok"},
					"battery2": {Safety: "device_down", Trips: []string{"device_down", "soc_min_pct"}},
				}}
			renderStatus(b, s, now, false)
		},
		"status_boot_delay": func(b *bytes.Buffer) {
			s := st
			s.Devices = s.Devices[:1]
			s.Lease = nil
			s.Uplink = diag.UplinkReport{Broker: "tls://mqtt.example.net:8883", BootDelayUntil: at(-12 * time.Second),
				NextAttempt: at(-12 * time.Second), DownSince: at(3 * time.Second)}
			s.Judge(now)
			renderStatus(b, s, now, false)
		},
		"buffer":      func(b *bytes.Buffer) { renderBuffer(b, st.Buffer, now) },
		"lease":       func(b *bytes.Buffer) { renderLease(b, st.Lease, now) },
		"lease_none":  func(b *bytes.Buffer) { renderLease(b, nil, now) },
		"events":      func(b *bytes.Buffer) { renderEvents(b, fixedEvents(), now) },
		"points":      func(b *bytes.Buffer) { renderPoints(b, fixedPoints()) },
		"points_none": func(b *bytes.Buffer) { renderPoints(b, nil) },
	}
	for name, render := range cases {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			render(&b)
			for i, line := range strings.Split(b.String(), "\n") {
				if n := len([]rune(line)); n > 80 && !strings.HasSuffix(name, "_wide") {
					t.Errorf("line %d is %d columns, over 80: %q", i+1, n, line)
				}
			}
			golden := filepath.Join("testdata", "golden", name+".txt")
			if *update {
				os.WriteFile(golden, b.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("output differs from %s\n got:\n%s\nwant:\n%s", golden, b.String(), want)
			}
		})
	}
}

func fixedEvents() []diag.EventReport {
	return []diag.EventReport{
		{Time: now.Add(-2*time.Hour - 13*time.Minute), Type: "uplink_lost", Data: map[string]any{"broker": "tls://mqtt.example.net:8883", "error": "EOF"}},
		{Time: now.Add(-133 * time.Second), Type: "device_down", Data: map[string]any{"device": "meter", "error": "i/o timeout"}},
		{Time: now.Add(-12 * time.Second), Type: "clamped", Data: map[string]any{"rule": "max_discharge_w", "requested_w": 5000.0, "applied_w": 2500.0}},
	}
}

func fixedPoints() []diag.PointReport {
	v := func(x float64) *float64 { return &x }
	return []diag.PointReport{
		{Device: "battery", Name: "soc_pct", Value: v(72.5), Unit: "%", AgeS: 0.4},
		{Device: "battery", Name: "power_w", Value: v(-1500), Unit: "W", AgeS: 0.4},
		{Device: "battery", Name: "cell_v_max", Value: v(3.412), Unit: "V", AgeS: 0.4},
		{Device: "battery", Name: "temp_sink_c", Quality: hearth.QualityNotImplemented, Unit: "°C", AgeS: 0.4},
		{Device: "meter", Name: "grid_w", Quality: hearth.QualityCommError, Unit: "W", AgeS: 133, Stale: true},
	}
}

// TestJSONMatchesSchemas holds the --json forms to their documented schemas.
func TestJSONMatchesSchemas(t *testing.T) {
	st := fixedStatus()
	cases := []struct {
		schema string
		doc    any
	}{
		{"status.json", st},
		{"lease.json", st.Lease},
		{"buffer.json", st.Buffer},
		{"points.json", fixedPoints()},
		{"events.json", fixedEvents()},
	}
	for _, c := range cases {
		b, err := json.Marshal(c.doc)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemacheck.Validate(filepath.Join("..", "..", "docs", "schemas", "diag", c.schema), b); err != nil {
			t.Errorf("%s: %v\n%s", c.schema, err, b)
		}
	}
	// The check can fail: a status without a verdict is refused.
	b, _ := json.Marshal(map[string]any{"ts": now})
	if err := schemacheck.Validate(filepath.Join("..", "..", "docs", "schemas", "diag", "status.json"), b); err == nil {
		t.Errorf("an incomplete status passed the schema")
	}
}

func TestParseWatts(t *testing.T) {
	for _, c := range []struct {
		in   string
		want hearth.Watts
		ok   bool
	}{{"-500W", -500, true}, {"-500", -500, true}, {"1.5kW", 1500, true}, {"250w", 250, true}, {"-0.5KW", -500, true},
		{"", 0, false}, {"W", 0, false}, {"fast", 0, false}, {"NaN", 0, false}, {"Infw", 0, false}} {
		got, err := parseWatts(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseWatts(%q) = %v, %v; want %v, ok %t", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestParseInterspersedTakesNegativeNumbers(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	dur := fs.String("for", "", "")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseInterspersed(fs, []string{"set", "power", "-500W", "--for", "2m", "--json"})
	if err != nil || strings.Join(pos, " ") != "set power -500W" || *dur != "2m" || !*asJSON {
		t.Errorf("got %q, --for %q, --json %t, err %v", pos, *dur, *asJSON, err)
	}
	pos, err = parseInterspersed(fs, []string{"--for", "1m", "-.5kW", "x"})
	if err != nil || strings.Join(pos, " ") != "-.5kW x" || *dur != "1m" {
		t.Errorf("got %q, --for %q, err %v", pos, *dur, err)
	}
	if _, err := parseInterspersed(fs, []string{"-frob"}); err == nil {
		t.Error("an unknown flag was taken as an argument")
	}
}

func TestRedactText(t *testing.T) {
	in := `broker=tls://gw:s3cret@mqtt.example.net:8883 {"password": "hunter2", "token":"abc"} password_file=/etc/hearth/pw
-----BEGIN EC PRIVATE KEY-----
MHcCAQEE
-----END EC PRIVATE KEY-----`
	out := string(redactText([]byte(in)))
	for _, secret := range []string{"s3cret", "hunter2", "abc\"", "MHcCAQEE"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q left in:\n%s", secret, out)
		}
	}
	for _, kept := range []string{"tls://<redacted>@mqtt.example.net:8883", "password_file=/etc/hearth/pw", "<redacted private key>"} {
		if !strings.Contains(out, kept) {
			t.Errorf("%q missing from:\n%s", kept, out)
		}
	}
}
