package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/config"
)

func TestConfigInitFlagsWriteValidConfig(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		transport string
		address   string
		tls       bool
	}{
		{"tcp", []string{"--gateway-id", "gw-0042", "--broker", "tcp://127.0.0.1:1883", "--device-address", "192.0.2.7:502"}, "tcp", "192.0.2.7:502", false},
		{"rtu over tls", []string{"--gateway-id", "gw.site_7", "--broker", "tls://mqtt.example.net:8883", "--transport", "rtu", "--device-address", "/dev/ttyUSB0", "--unit-id", "3"}, "rtu", "/dev/ttyUSB0", true},
		{"rtu-over-tcp", []string{"--gateway-id", "G1", "--broker", "tls://[2001:db8::1]:8883", "--transport", "rtu-over-tcp", "--device-address", "192.0.2.8:4196"}, "rtu-over-tcp", "192.0.2.8:4196", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "hearth.yaml")
			var stdout, stderr bytes.Buffer
			code := configInit(append(tc.args, "--out", out), strings.NewReader(""), false, &stdout, &stderr)
			if code != exitOK {
				t.Fatalf("exit %d, want 0; stderr: %s", code, stderr.String())
			}
			cfg, err := config.Read(out)
			if err != nil {
				t.Fatalf("written config does not load: %v", err)
			}
			d := cfg.Devices[0]
			if got, want := d.Transport, tc.transport; got != want {
				t.Errorf("transport = %q, want %q", got, want)
			}
			if got, want := d.Address, tc.address; got != want {
				t.Errorf("address = %q, want %q", got, want)
			}
			if got, want := cfg.Uplink.KeyFile != "", tc.tls; got != want {
				t.Errorf("key_file set = %v, want %v (broker %s)", got, want, cfg.Uplink.Broker)
			}
			st, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := st.Mode().Perm(), os.FileMode(0o640); got != want {
				t.Errorf("mode = %o, want %o", got, want)
			}
			// The config check command agrees, but for the certificates,
			// which do not exist until `hearth cert request` and signing.
			stdout.Reset()
			code = run([]string{"config", "check", out}, &stdout, &stderr)
			switch {
			case !tc.tls && code != exitOK:
				t.Errorf("hearth config check: exit %d: %s", code, stdout.String())
			case tc.tls && (code != exitConfig || !strings.Contains(stdout.String(), "uplink.ca_file") || !strings.Contains(stdout.String(), "uplink.cert_file")):
				t.Errorf("hearth config check before the certificates exist: exit %d: %s\nwant exit 3 naming ca_file and cert_file", code, stdout.String())
			}
		})
	}
}

func TestConfigInitUnitID(t *testing.T) {
	out := filepath.Join(t.TempDir(), "hearth.yaml")
	var stdout, stderr bytes.Buffer
	args := []string{"--gateway-id", "gw1", "--broker", "tcp://127.0.0.1:1883", "--device-address", "192.0.2.7:502", "--unit-id", "0", "--out", out}
	if code := configInit(args, nil, false, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	cfg, err := config.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Devices[0].UnitID; got != 0 {
		t.Errorf("unit_id = %d, want 0 (explicit, not the default 1)", got)
	}
}

func TestConfigInitRefusesOverwrite(t *testing.T) {
	out := filepath.Join(t.TempDir(), "hearth.yaml")
	const old = "# installer's edits\n"
	if err := os.WriteFile(out, []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	args := []string{"--gateway-id", "gw1", "--broker", "tcp://127.0.0.1:1883", "--device-address", "192.0.2.7:502", "--out", out}
	var stdout, stderr bytes.Buffer
	if code := configInit(args, nil, false, &stdout, &stderr); code != exitFailed {
		t.Fatalf("exit %d, want %d", code, exitFailed)
	}
	if !strings.Contains(stderr.String(), "--force") {
		t.Errorf("stderr %q does not mention --force", stderr.String())
	}
	if got, _ := os.ReadFile(out); string(got) != old {
		t.Fatalf("file changed without --force: %q", got)
	}
	if code := configInit(append(args, "--force"), nil, false, &stdout, &stderr); code != exitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr.String())
	}
	if _, err := config.Read(out); err != nil {
		t.Fatalf("after --force: %v", err)
	}
}

func TestConfigInitRejectsInvalid(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad gateway id", []string{"--gateway-id", "gw/1", "--broker", "tcp://h:1883", "--device-address", "192.0.2.7:502"}, exitConfig, "gateway_id"},
		{"bad broker", []string{"--gateway-id", "gw1", "--broker", "http://h", "--device-address", "192.0.2.7:502"}, exitConfig, "uplink.broker"},
		{"rtu needs a path", []string{"--gateway-id", "gw1", "--broker", "tcp://h:1883", "--transport", "rtu", "--device-address", "192.0.2.7:502"}, exitConfig, "serial device"},
		{"bad transport", []string{"--gateway-id", "gw1", "--broker", "tcp://h:1883", "--transport", "udp", "--device-address", "192.0.2.7:502"}, exitConfig, "transport"},
		{"missing flags", []string{"--gateway-id", "gw1"}, exitUsage, "--broker, --device-address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			var stdout, stderr bytes.Buffer
			code := configInit(append(tc.args, "--out", out), strings.NewReader(""), false, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s was written for an invalid config", out)
			}
		})
	}
}

func TestConfigInitPrompts(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		answers   string
		notAsked  []string
		asked     []string
		gateway   string
		transport string
		address   string
	}{
		{
			name:    "rtu given as a flag",
			args:    []string{"--broker", "tcp://127.0.0.1:1883", "--transport", "rtu"},
			answers: "gw-typed\n/dev/ttyAMA0\n",
			// Values given as flags are not asked for again.
			notAsked: []string{"MQTT broker", "transport"},
			asked:    []string{"gateway id", "device address (/dev/ttyUSB0)"},
			gateway:  "gw-typed", transport: "rtu", address: "/dev/ttyAMA0",
		},
		{
			name:    "empty answer keeps the default transport",
			args:    []string{"--gateway-id", "gw-flag"},
			answers: "tcp://127.0.0.1:1883\n\n192.0.2.9:502",
			// The last answer has no newline: the end of input ends it.
			notAsked: []string{"gateway id"},
			asked:    []string{"MQTT broker", "transport (tcp, rtu, rtu-over-tcp) [tcp]", "device address (192.0.2.10:502)"},
			gateway:  "gw-flag", transport: "tcp", address: "192.0.2.9:502",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "hearth.yaml")
			var stdout, stderr bytes.Buffer
			code := configInit(append(tc.args, "--out", out), strings.NewReader(tc.answers), true, &stdout, &stderr)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			prompts := stderr.String()
			for _, p := range tc.notAsked {
				if strings.Contains(prompts, p) {
					t.Errorf("asked for %q, given as a flag: %q", p, prompts)
				}
			}
			for _, p := range tc.asked {
				if !strings.Contains(prompts, p) {
					t.Errorf("prompts %q lack %q", prompts, p)
				}
			}
			cfg, err := config.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			d := cfg.Devices[0]
			if cfg.GatewayID != tc.gateway || d.Address != tc.address || d.Transport != tc.transport {
				t.Errorf("got gateway %q, device %q over %q; want %q, %q over %q",
					cfg.GatewayID, d.Address, d.Transport, tc.gateway, tc.address, tc.transport)
			}
		})
	}
}

func TestConfigInitStdout(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"--gateway-id", "gw1", "--broker", "tls://mqtt.example.net:8883", "--device-address", "192.0.2.7:502", "--out", "-"}
	if code := configInit(args, nil, false, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, err := config.Parse("stdout", stdout.Bytes()); err != nil {
		t.Fatalf("printed config does not parse: %v\n%s", err, stdout.String())
	}
}

func TestCertRequest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	var stdout, stderr bytes.Buffer
	code := run([]string{"cert", "request", "--gateway-id", "gw-0042", "--out-dir", dir, "--json"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res struct{ Key, CSR, Subject string }
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", stdout.String(), err)
	}
	if res.Key != filepath.Join(dir, "gateway.key") || res.CSR != filepath.Join(dir, "gateway.csr") || res.Subject != "CN=gw-0042" {
		t.Errorf("output = %+v", res)
	}

	st, err := os.Stat(res.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key mode = %o, want %o", got, want)
	}
	keyPEM, _ := os.ReadFile(res.Key)
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PEM PRIVATE KEY: %q", keyPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want an ECDSA P-256 key", k)
	}

	csrPEM, _ := os.ReadFile(res.CSR)
	cb, _ := pem.Decode(csrPEM)
	if cb == nil || cb.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("csr file is not a PEM CERTIFICATE REQUEST: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("csr signature: %v", err)
	}
	if got := csr.Subject.CommonName; got != "gw-0042" {
		t.Errorf("CN = %q, want gw-0042", got)
	}
	if got := csr.SignatureAlgorithm; got != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm = %v, want ECDSA-SHA256", got)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		t.Errorf("csr public key does not match the written private key")
	}

	// A second request must not replace the key its certificate belongs to.
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"cert", "request", "--gateway-id", "gw-0042", "--out-dir", dir}, &stdout, &stderr); code != exitFailed {
		t.Fatalf("second request: exit %d, want %d", code, exitFailed)
	}
	if again, _ := os.ReadFile(res.Key); !bytes.Equal(again, keyPEM) {
		t.Fatal("key replaced without --force")
	}
	if code := run([]string{"cert", "request", "--gateway-id", "gw-0042", "--out-dir", dir, "--force"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr.String())
	}
	if again, _ := os.ReadFile(res.Key); bytes.Equal(again, keyPEM) {
		t.Fatal("--force kept the old key")
	}
}

func TestCertRequestGatewayIDFromConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hearth.yaml")
	var stdout, stderr bytes.Buffer
	if code := configInit([]string{"--gateway-id", "gw-from-cfg", "--broker", "tcp://h:1883", "--device-address", "192.0.2.7:502", "--out", cfg}, nil, false, &stdout, &stderr); code != exitOK {
		t.Fatalf("config init: exit %d: %s", code, stderr.String())
	}
	if code := run([]string{"cert", "request", "--config", cfg, "--out-dir", dir}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "gateway.csr"))
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no csr")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if csr.Subject.CommonName != "gw-from-cfg" {
		t.Errorf("CN = %q, want gw-from-cfg", csr.Subject.CommonName)
	}
}

func TestCertRequestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"cert"},
		{"cert", "sign"},
		{"cert", "request", "--gateway-id", "a/b", "--out-dir", t.TempDir()},
		{"cert", "request", "--config", filepath.Join(t.TempDir(), "missing.yaml")},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitUsage, stderr.String())
		}
	}
}
