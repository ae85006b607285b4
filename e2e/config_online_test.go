package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// writeTLSConfig writes a config with one device at simAddr and a broker
// with the given CA, certificate and key files (on lines 8, 9 and 10)
// into dir, and returns its path.
func writeTLSConfig(t *testing.T, dir, gateway, simAddr, broker, ca, cert, key string) string {
	t.Helper()
	cfg := filepath.Join(dir, "hearth.yaml")
	writeFile(t, cfg, `gateway_id: `+gateway+`
data_dir: `+dir+`
diag_socket: `+filepath.Join(dir, "hearth.sock")+`
devices:
  - {name: battery, address: "`+simAddr+`", poll_interval: 250ms, timeout: 500ms}
uplink:
  broker: `+broker+`
  ca_file: `+ca+`
  cert_file: `+cert+`
  key_file: `+key+`
  boot_delay: 0s
`)
	return cfg
}

// TestConfigCheckOnlineTLSOnPlainPort: a tls:// broker URL that names a
// plain MQTT listener fails the TLS step with what that means, not a bare
// EOF, and the device is still probed.
func TestConfigCheckOnlineTLSOnPlainPort(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "PLAIN-1"})
	m := harness.StartMosquitto(t)
	certs := harness.GenerateCerts(t)
	gwCert, gwKey := certs.Client(t, "gw-plain")
	cfg := writeTLSConfig(t, t.TempDir(), "gw-plain", simAddr, strings.Replace(m.URL(), "tcp://", "tls://", 1), certs.CAFile, gwCert, gwKey)
	out, errOut, code := hearthCLI(t, nil, "config", "check", "--online", cfg)
	for _, want := range []string{
		"device battery (tcp " + simAddr + " unit 1, via direct): ok",
		"broker tls: FAILED: ",
		"the broker answered without TLS: is this a plain port? use tcp:// or the TLS port",
		"online: 1 of 1 devices answered; broker FAILED",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("config check --online, tls:// on a plain port: exit %d (want 1), output lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
}

// TestConfigCheckOnlineCertificatesPending: with the gateway's certificate
// and key not issued yet, --online names each missing file on its line,
// and still probes the device and the broker's TCP and TLS (exit 3: the
// agent could not start yet).
func TestConfigCheckOnlineCertificatesPending(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "PENDING-1"})
	certs := harness.GenerateCerts(t)
	m := harness.StartMosquitto(t, harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, true), harness.WithACL(harness.GatewayACL))
	dir := t.TempDir()
	cfg := writeTLSConfig(t, dir, "gw-pending", simAddr, m.URL(), certs.CAFile,
		filepath.Join(dir, "gateway.crt"), filepath.Join(dir, "gateway.key"))
	out, errOut, code := hearthCLI(t, nil, "config", "check", "--online", cfg)
	for _, want := range []string{
		cfg + ":9: uplink.cert_file: ", "gateway.crt: no such file",
		cfg + ":10: uplink.key_file: ", "gateway.key: no such file",
		"valid but for the files above",
		"device battery (tcp " + simAddr + " unit 1, via direct): ok, SunSpec, models 1,103,124,802; hearth hearthsim, serial PENDING-1",
		"broker tls: ok: TLS 1.3, broker certificate",
		"broker client certificate: FAILED: ", "TCP and TLS were checked without it",
	} {
		if code != 3 || !strings.Contains(out, want) {
			t.Errorf("config check --online, certificates pending: exit %d (want 3), output lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
}
