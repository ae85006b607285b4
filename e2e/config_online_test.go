package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestConfigCheckOnlineTLSOnPlainPort: a tls:// broker URL that names a
// plain MQTT listener fails the TLS step with what that means, not a bare
// EOF, and the device is still probed.
func TestConfigCheckOnlineTLSOnPlainPort(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1, Serial: "PLAIN-1"})
	m := harness.StartMosquitto(t)
	certs := harness.GenerateCerts(t)
	gwCert, gwKey := certs.Client(t, "gw-plain")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	writeFile(t, cfg, `gateway_id: gw-plain
data_dir: `+dir+`
diag_socket: `+filepath.Join(dir, "hearth.sock")+`
devices:
  - {name: battery, address: "`+simAddr+`", poll_interval: 250ms, timeout: 500ms}
uplink:
  broker: `+strings.Replace(m.URL(), "tcp://", "tls://", 1)+`
  ca_file: `+certs.CAFile+`
  cert_file: `+gwCert+`
  key_file: `+gwKey+`
  boot_delay: 0s
`)
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
