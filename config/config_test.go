package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestConfigGolden runs every testdata/config/NAME.yaml and compares the
// errors with NAME.err (empty: the config is valid).
func TestConfigGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d golden configs, want at least 4", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(filepath.Base(f), data)
			got, warned := "", ""
			if err != nil {
				got = err.Error() + "\n"
			} else {
				for _, w := range cfg.Warnings() {
					warned += w.Error() + "\n"
				}
			}
			for _, g := range []struct{ ext, got string }{{".err", got}, {".warn", warned}} {
				golden := strings.TrimSuffix(f, ".yaml") + g.ext
				if *update {
					os.WriteFile(golden, []byte(g.got), 0o644)
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if g.got != string(want) {
					t.Errorf("%s differ\n got:\n%s\nwant:\n%s", g.ext, g.got, want)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := Load("testdata/config/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if d.Profile != "sunspec" || d.Transport != "tcp" || d.UnitID != 1 || d.PollInterval.D() != time.Second {
		t.Errorf("device defaults not applied: %+v", d)
	}
	if cfg.Uplink.TopicPrefix != "hearth/v1" || cfg.DataDir != DefaultDataDir || cfg.DiagSocket != DefaultDiagSocket {
		t.Errorf("top-level defaults not applied: %+v", cfg)
	}
	if cfg.Safety.SocMinPct != 10 || cfg.Safety.Fallback != "auto" {
		t.Errorf("safety defaults not applied: %+v", cfg.Safety)
	}
}

func TestErrorsAreErrors(t *testing.T) {
	_, err := Parse("x.yaml", []byte("gateway_id: [1, 2\n"))
	var ce Errors
	if !errors.As(err, &ce) || len(ce) == 0 {
		t.Fatalf("got %v (%T), want Errors", err, err)
	}
}

// TestExampleConfigIsValid loads the shipped example with its certificate
// paths pointing at real certificates: everything else in it is valid.
func TestExampleConfigIsValid(t *testing.T) {
	data, err := os.ReadFile("../configs/hearth.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	certs := harness.GenerateCerts(t)
	text := strings.NewReplacer("/etc/hearth/ca.pem", certs.CAFile,
		"/etc/hearth/gateway.crt", certs.ClientCertFile, "/etc/hearth/gateway.key", certs.ClientKeyFile).Replace(string(data))
	path := filepath.Join(t.TempDir(), "hearth.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("the shipped example config does not validate:\n%v", err)
	}
}

// TestLoadChecksNamedFiles: Load (hearth run, hearth config check) reports
// certificate files that do not exist, each on its line, while Parse
// (hearth config init, which writes the config before the certificate
// request) does not read them.
func TestLoadChecksNamedFiles(t *testing.T) {
	const path = "../configs/hearth.example.yaml"
	_, err := Load(path)
	var ce Errors
	if !errors.As(err, &ce) {
		t.Fatalf("Load of the example as shipped: %v, want Errors for its missing certificates", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lineOf := func(key string) int {
		for i, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), key+":") {
				return i + 1
			}
		}
		t.Fatalf("the example has no %s", key)
		return 0
	}
	ca, cert, key := lineOf("ca_file"), lineOf("cert_file"), lineOf("key_file")
	got := map[int]string{}
	for _, e := range ce {
		got[e.Line] = e.Msg
	}
	if len(ce) != 3 || !strings.Contains(got[ca], "uplink.ca_file") || !strings.Contains(got[ca], "no such file") ||
		!strings.Contains(got[cert], "uplink.cert_file") || !strings.Contains(got[key], "uplink.key_file") || !strings.Contains(got[key], "no such file") {
		t.Errorf("Load errors:\n%v\nwant ca_file at line %d, cert_file at line %d and key_file at line %d, each missing", err, ca, cert, key)
	}
	if _, err := Parse(path, data); err != nil {
		t.Errorf("Parse read the certificate files: %v", err)
	}
}

// TestRedacted: the config as a support bundle shows it keeps every
// setting, defaults included, and hides what could be a secret.
func TestRedacted(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte("gateway_id: gw-r\ndevices:\n  - {name: battery, address: \"192.0.2.1:502\"}\n"+
		"uplink: {broker: \"tls://b.example:8883\", username: gw-r-user, password_file: /etc/hearth/pw}\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	up := m["uplink"].(map[string]any)
	if up["username"] != "<redacted>" || up["password_file"] != "/etc/hearth/pw" || up["broker"] != "tls://b.example:8883" {
		t.Errorf("uplink redacted as %v", up)
	}
	if m["gateway_id"] != "gw-r" || m["safety"].(map[string]any)["max_charge_w"] != 2500 {
		t.Errorf("settings lost: gateway_id %v, safety %v", m["gateway_id"], m["safety"])
	}
	if d := m["devices"].([]any)[0].(map[string]any); d["poll_interval"] != "1s" {
		t.Errorf("device defaults not shown: %v", d)
	}
}

// TestUplinkClusterSession: uplink.brokers and the reconnect settings reach
// the session's config.
func TestUplinkClusterSession(t *testing.T) {
	cfg, err := Load("testdata/config/uplink_cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.Session(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tls://mqtt-1.example.net:8883", "tls://mqtt-2.example.net:8883", "tls://mqtt-3.example.net:8883"}
	if !slices.Equal(s.Nodes(), want) || s.Broker != "" || s.BackoffMin != 2*time.Second || s.BackoffMax != 5*time.Minute || s.KeepAlive != 30*time.Second || s.CleanSession || s.Heartbeat != 2*time.Minute {
		t.Errorf("session config %+v; want the three nodes, backoff 2s..5m, keepalive 30s, a kept session, heartbeat 2m", s)
	}
}
