package e2e

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/schemacheck"
)

// readBundle returns the files of a hearth dump bundle by base name.
func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("bundle %s: %v", path, err)
	}
	files := map[string]string{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("bundle %s: %v", path, err)
		}
		b, _ := io.ReadAll(tr)
		files[filepath.Base(h.Name)] = string(b)
	}
}

// TestDumpBundle: `hearth dump` writes one bundle with the config (its
// secrets redacted), status, events, points, buffer, links, lease and the
// agent's log; with the agent stopped, what it can still have.
func TestDumpBundle(t *testing.T) {
	t.Parallel()
	_, simAddr := startSim(t, sim.Config{UnitID: 1})
	m := startBroker(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hearth.sock")
	pw := filepath.Join(dir, "password")
	writeFile(t, pw, "hunter2-secret\n")
	cfg := filepath.Join(dir, "hearth.yaml")
	writeFile(t, cfg, `gateway_id: gw-dump
data_dir: `+dir+`
diag_socket: `+sock+`
devices:
  - {name: battery, address: "`+simAddr+`", poll_interval: 250ms, timeout: 500ms}
uplink:
  broker: `+m.URL()+`
  username: dump-user-name
  password_file: `+pw+`
  boot_delay: 0s
`)
	a := startAgent(t, cfg)
	waitStatus(t, sock, func(st diag.StatusReport) bool {
		return len(st.Devices) == 1 && st.Devices[0].Up && st.Uplink.Connected
	})

	bundle := filepath.Join(dir, "bundle.tar.gz")
	out, errOut, code := hearthCLI(t, nil, "dump", "--socket", sock, "--out", bundle)
	if code != 0 || !strings.HasPrefix(out, bundle+": ") {
		t.Fatalf("dump: exit %d\n%s%s", code, out, errOut)
	}
	files := readBundle(t, bundle)
	for _, name := range []string{"manifest.json", "config.yaml", "status.json", "events.json", "points.json", "buffer.json", "lease.json", "links.json", "logs.txt"} {
		if files[name] == "" {
			t.Errorf("bundle lacks %s (has %d files)", name, len(files))
		}
	}
	for name, body := range files {
		for _, secret := range []string{"hunter2-secret", "dump-user-name"} {
			if strings.Contains(body, secret) {
				t.Errorf("%s in the bundle holds %q", name, secret)
			}
		}
	}
	for _, want := range []string{"gateway_id: gw-dump", "username: <redacted>", "password_file: " + pw, "max_charge_w: 2500", "max_bytes: 268435456"} {
		if !strings.Contains(files["config.yaml"], want) {
			t.Errorf("config.yaml lacks %q:\n%s", want, files["config.yaml"])
		}
	}
	if strings.Contains(files["config.yaml"], "e+") {
		t.Errorf("config.yaml writes a number in exponent form, which config check refuses:\n%s", files["config.yaml"])
	}
	if err := schemacheck.Validate("../docs/schemas/diag/status.json", []byte(files["status.json"])); err != nil {
		t.Errorf("status.json: %v", err)
	}
	if !strings.Contains(files["events.json"], "uplink_connected") || !strings.Contains(files["logs.txt"], `msg="hearth starting"`) {
		t.Errorf("events or logs missing what happened:\nevents %s\nlogs %s", files["events.json"], files["logs.txt"])
	}

	// The agent stopped: the config file and a manifest saying why.
	if _, err := a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	bundle2 := filepath.Join(dir, "bundle2.tar.gz")
	out, errOut, code = hearthCLI(t, nil, "dump", "--socket", sock, "--config", cfg, "--out", bundle2)
	if code != 0 || !strings.Contains(errOut, "not running") || !strings.Contains(errOut, "config file and the journal only") {
		t.Fatalf("dump without agent: exit %d\n%s%s", code, out, errOut)
	}
	files = readBundle(t, bundle2)
	if !strings.Contains(files["config.yaml"], "gateway_id: gw-dump") || strings.Contains(files["config.yaml"], "dump-user-name") ||
		!strings.Contains(files["manifest.json"], "not running") {
		t.Errorf("bundle without agent: config %q, manifest %q", files["config.yaml"], files["manifest.json"])
	}
}
