package uplink

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/internal/harness"
)

// TestProbe checks a gateway's broker the way `hearth config check
// --online` does, against Mosquitto set up as in production, and each
// way it can be wrong: the failing step is named, with a hint.
func TestProbe(t *testing.T) {
	t.Parallel()
	certs := harness.GenerateCerts(t)
	other := harness.GenerateCerts(t) // a CA the broker does not know
	tlsOpt := harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, true)
	good := harness.StartMosquitto(t, tlsOpt, harness.WithACL(harness.GatewayACL))
	noCheck := harness.StartMosquitto(t, tlsOpt, harness.WithACL(strings.ReplaceAll(harness.GatewayACL, "pattern readwrite hearth/v1/%u/check", "")))
	gwCert, gwKey := certs.Client(t, "gw-probe")
	strangerCert, strangerKey := other.Client(t, "gw-probe")
	cfg := func(broker string, edit func(*Config)) Config {
		c := Config{Broker: broker, GatewayID: "gw-probe", CAFile: certs.CAFile, CertFile: gwCert, KeyFile: gwKey}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	for _, tc := range []struct {
		name       string
		cfg        Config
		failAt     string // "" when it passes
		detail     string
		hint       string
		stepsTaken int
	}{
		{"production setup", cfg(good.URL(), nil), "", "published on hearth/v1/gw-probe/check and read it back", "", 5},
		{"nothing listens", cfg(fmt.Sprintf("tls://127.0.0.1:%d", harness.FreePort(t)), nil), "dial", "connection refused", "wrong port", 1},
		{"another CA", cfg(good.URL(), func(c *Config) { c.CAFile = other.CAFile }), "tls", "unknown authority", "not signed by " + other.CAFile, 2},
		{"certificate of another CA", cfg(good.URL(), func(c *Config) { c.CertFile, c.KeyFile = strangerCert, strangerKey }), "connect", "", "", 3},
		{"no client certificate", cfg(good.URL(), func(c *Config) { c.CertFile, c.KeyFile = "", "" }), "connect", "", "", 3},
		{"ACL without the check topic", cfg(noCheck.URL(), nil), "publish", "did not deliver it back", "pattern readwrite hearth/v1/%u/check", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Probe(context.Background(), tc.cfg)
			last := r.Steps[len(r.Steps)-1]
			switch {
			case tc.failAt == "" && !r.OK:
				t.Fatalf("probe failed: %+v", r.Steps)
			case tc.failAt != "" && (r.OK || last.Name != tc.failAt || last.OK):
				t.Fatalf("probe: ok %t, last step %+v; want a failure at %s", r.OK, last, tc.failAt)
			case len(r.Steps) != tc.stepsTaken:
				t.Errorf("%d steps taken, want %d: %+v", len(r.Steps), tc.stepsTaken, r.Steps)
			case !strings.Contains(last.Detail, tc.detail) || !strings.Contains(last.Hint, tc.hint):
				t.Errorf("last step %+v; want detail with %q and hint with %q", last, tc.detail, tc.hint)
			case tc.failAt != "" && last.Hint == "":
				t.Errorf("failed step without a hint: %+v", last)
			}
			t.Logf("%+v", r.Steps)
		})
	}
}
