package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hearth-energy/hearth/config"
)

// serviceUser is the system user the packaged service runs as; files that
// the agent must read are handed to it when provisioning runs as root.
const serviceUser = "hearth"

// gatewayIDRe is the rule config.Config applies to gateway_id: the id is part
// of MQTT topics and of the certificate subject.
var gatewayIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// cmdConfigInit is `hearth config init`: it writes a config from flags, or
// from answers typed at the terminal for the flags not given.
func cmdConfigInit(args []string, stdout, stderr io.Writer) int {
	return configInit(args, os.Stdin, isTerminal(os.Stdin), stdout, stderr)
}

// initAnswers are what `hearth config init` needs to know.
type initAnswers struct {
	GatewayID     string
	Broker        string
	Transport     string
	DeviceAddress string
	UnitID        int
}

func configInit(args []string, in io.Reader, tty bool, stdout, stderr io.Writer) int {
	fs := newFlags("hearth config init", stderr)
	var a initAnswers
	fs.StringVar(&a.GatewayID, "gateway-id", "", "unique id of this gateway (letters, digits, _ . -)")
	fs.StringVar(&a.Broker, "broker", "", "MQTT broker: tls://host:port or tcp://host:port")
	fs.StringVar(&a.Transport, "transport", "", "Modbus transport: tcp, rtu or rtu-over-tcp (default tcp)")
	fs.StringVar(&a.DeviceAddress, "device-address", "", "battery/inverter address: host:port, or a serial port such as /dev/ttyUSB0 for rtu")
	fs.IntVar(&a.UnitID, "unit-id", 1, "Modbus unit id of the device")
	out := fs.String("out", defaultPath, "file to write, or - for stdout")
	force := fs.Bool("force", false, "overwrite an existing file")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	if *out != "-" && !*force {
		if _, err := os.Lstat(*out); err == nil {
			fmt.Fprintf(stderr, "hearth config init: %s exists; pass --force to overwrite it\n", *out)
			return exitFailed
		}
	}
	// The folder must take the file before anyone answers a question.
	if *out != "-" {
		if err := writableFolder(*out); err != nil {
			fmt.Fprintln(stderr, "hearth config init:", err)
			return exitFailed
		}
	}
	inferTransport(&a)
	if tty {
		if err := ask(&a, bufio.NewReader(in), stderr); err != nil {
			fmt.Fprintln(stderr, "hearth config init:", err)
			return exitFailed
		}
	}
	inferTransport(&a)
	if a.Transport == "" {
		a.Transport = "tcp"
	}
	var missing []string
	for _, m := range []struct{ flag, v string }{
		{"--gateway-id", a.GatewayID}, {"--broker", a.Broker}, {"--device-address", a.DeviceAddress},
	} {
		if m.v == "" {
			missing = append(missing, m.flag)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "hearth config init: missing %s (or run it on a terminal to be asked)\n", strings.Join(missing, ", "))
		return exitUsage
	}
	data := renderConfig(a)
	// The same validation as `hearth config check` and `hearth run`, so a
	// file written here always starts the agent.
	if _, err := config.Parse(*out, data); err != nil {
		fmt.Fprintln(stderr, err)
		keepAnswers(stderr, a, *out)
		return exitConfig
	}
	if *out == "-" {
		stdout.Write(data)
		return exitOK
	}
	if err := writeFileAtomic(*out, data, 0o640, *force); err != nil {
		fmt.Fprintln(stderr, "hearth config init:", err)
		keepAnswers(stderr, a, *out)
		return exitFailed
	}
	owner := handToService(*out, false)
	if *asJSON {
		writeJSON(stdout, map[string]string{"file": *out, "gateway_id": a.GatewayID})
	} else {
		fmt.Fprintf(stdout, "wrote %s%s\n", *out, owner)
		fmt.Fprintf(stderr, "check it with: hearth config check %s\n", *out)
	}
	return exitOK
}

// inferTransport takes a serial port for an address as transport rtu, as
// the modbus commands do, when no transport is given.
func inferTransport(a *initAnswers) {
	if a.Transport == "" && strings.HasPrefix(a.DeviceAddress, "/dev/") {
		a.Transport = "rtu"
	}
}

// writableFolder makes path's folder when it is missing, and checks a
// file can be made in it; the error says what to do instead.
func writableFolder(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s (%v): run with sudo, or pass --out FILE in a folder you can write", dir, errors.Unwrap(err))
	}
	f, err := os.CreateTemp(dir, ".hearth-init-*")
	if err != nil {
		return fmt.Errorf("cannot write in %s (%v): run with sudo, or pass --out FILE in a folder you can write", dir, errors.Unwrap(err))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// keepAnswers prints the command that gives the same answers again, so
// that none is lost when the file could not be written.
func keepAnswers(w io.Writer, a initAnswers, out string) {
	args := []string{"hearth", "config", "init", "--gateway-id", a.GatewayID, "--broker", a.Broker,
		"--transport", a.Transport, "--device-address", a.DeviceAddress, "--unit-id", strconv.Itoa(a.UnitID), "--out", out}
	for i, arg := range args {
		if arg == "" || strings.ContainsAny(arg, " \t'\"$`\\;&|<>()*?[]#~") {
			args[i] = "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
		}
	}
	fmt.Fprintf(w, "your answers, to run again once that is fixed:\n  %s\n", strings.Join(args, " "))
}

// ask prompts for every answer not given as a flag; an empty answer keeps
// the default shown in brackets.
func ask(a *initAnswers, r *bufio.Reader, w io.Writer) error {
	prompt := func(label, def string, dst *string) error {
		if *dst != "" {
			return nil
		}
		if def != "" {
			fmt.Fprintf(w, "%s [%s]: ", label, def)
		} else {
			fmt.Fprintf(w, "%s: ", label)
		}
		line, err := r.ReadString('\n')
		if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
			return fmt.Errorf("read %s: %w", label, err)
		}
		*dst = strings.TrimSpace(line)
		if *dst == "" {
			*dst = def
		}
		return nil
	}
	host, _ := os.Hostname()
	if !gatewayIDRe.MatchString(host) {
		host = ""
	}
	if err := prompt("gateway id", host, &a.GatewayID); err != nil {
		return err
	}
	if err := prompt("MQTT broker (tls://host:8883)", "", &a.Broker); err != nil {
		return err
	}
	if err := prompt("Modbus transport (tcp, rtu, rtu-over-tcp)", "tcp", &a.Transport); err != nil {
		return err
	}
	example := "192.0.2.10:502"
	if a.Transport == "rtu" {
		example = "/dev/ttyUSB0"
	}
	if err := prompt("device address ("+example+")", "", &a.DeviceAddress); err != nil {
		return err
	}
	// "tcp" may have been the default taken without a thought: a serial
	// port says rtu.
	if a.Transport == "tcp" && strings.HasPrefix(a.DeviceAddress, "/dev/") {
		fmt.Fprintf(w, "%s is a serial port: transport rtu\n", a.DeviceAddress)
		a.Transport = "rtu"
	}
	return nil
}

// renderConfig writes the answers as a commented config; every key it does
// not write keeps its default.
func renderConfig(a initAnswers) []byte {
	var b strings.Builder
	b.WriteString("# Written by `hearth config init`. Keys not set here take their defaults;\n")
	b.WriteString("# /usr/share/hearth/hearth.example.yaml shows every key with a comment.\n")
	b.WriteString("# Check this file with: hearth config check FILE\n")
	fmt.Fprintf(&b, "gateway_id: %s\n", yamlString(a.GatewayID))
	b.WriteString("devices:\n")
	b.WriteString("  - name: battery\n")
	b.WriteString("    profile: sunspec\n")
	fmt.Fprintf(&b, "    transport: %s\n", yamlString(a.Transport))
	fmt.Fprintf(&b, "    address: %s\n", yamlString(a.DeviceAddress))
	fmt.Fprintf(&b, "    unit_id: %d\n", a.UnitID)
	if a.Transport == "rtu" {
		b.WriteString("    baud: 9600\n    parity: N\n    stop_bits: 1\n")
	}
	b.WriteString("uplink:\n")
	fmt.Fprintf(&b, "  broker: %s\n", yamlString(a.Broker))
	if u, err := url.Parse(a.Broker); err == nil && u.Scheme == "tls" {
		b.WriteString("  # Made by `hearth cert request --out-dir /etc/hearth` and the operator's CA.\n")
		b.WriteString("  ca_file: /etc/hearth/ca.pem\n")
		b.WriteString("  cert_file: /etc/hearth/gateway.crt\n")
		b.WriteString("  key_file: /etc/hearth/gateway.key\n")
	}
	return []byte(b.String())
}

// yamlString renders s as a YAML scalar, quoted only when it must be.
func yamlString(s string) string {
	out, err := yaml.Marshal(s)
	if err != nil {
		return strconv.Quote(s)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// cmdCert is `hearth cert request`: a new ECDSA P-256 key for the gateway,
// and a certificate signing request with the gateway id as common name for
// the operator's CA to sign.
func cmdCert(args []string, stdout, stderr io.Writer) int {
	const certUsage = "usage: hearth cert request --gateway-id ID [--out-dir DIR] [--force] [--json]"
	if code, ok := subcommand(args, "request", certUsage, stdout, stderr); !ok {
		return code
	}
	fs := newFlags("hearth cert request", stderr)
	id := fs.String("gateway-id", "", "gateway id: the certificate's common name (default: gateway_id of --config)")
	cfgPath := fs.String("config", defaultPath, "config to take the gateway id from when --gateway-id is not given")
	dir := fs.String("out-dir", "/etc/hearth", "folder for gateway.key and gateway.csr")
	force := fs.Bool("force", false, "replace an existing key (a certificate signed for the old key stops working)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := parseNoArgs(fs, args[1:], stdout, stderr); !ok {
		return code
	}
	if *id == "" {
		cfg, err := config.Read(*cfgPath) // the certificate is what this makes
		if err != nil {
			fmt.Fprintf(stderr, "hearth cert request: give --gateway-id, or a valid --config (%v)\n", err)
			return exitUsage
		}
		*id = cfg.GatewayID
	}
	if !gatewayIDRe.MatchString(*id) {
		fmt.Fprintf(stderr, "hearth cert request: gateway id %q must be letters, digits, '_', '.' or '-'\n", *id)
		return exitUsage
	}
	keyPath, csrPath, err := certRequest(*id, *dir, *force)
	if err != nil {
		fmt.Fprintln(stderr, "hearth cert request:", err)
		return exitFailed
	}
	owner := handToService(keyPath, true)
	if *asJSON {
		writeJSON(stdout, map[string]string{"key": keyPath, "csr": csrPath, "subject": "CN=" + *id})
	} else {
		fmt.Fprintf(stdout, "key %s (mode 0600%s)\ncsr %s (subject CN=%s)\n", keyPath, owner, csrPath, *id)
		fmt.Fprintf(stderr, "have the operator's CA sign %s and install the certificate as %s\n",
			csrPath, filepath.Join(*dir, "gateway.crt"))
	}
	return exitOK
}

// certRequest writes DIR/gateway.key (PKCS#8, mode 0600) and DIR/gateway.csr.
// It refuses to replace an existing key unless force is set.
func certRequest(gatewayID, dir string, force bool) (keyPath, csrPath string, err error) {
	keyPath = filepath.Join(dir, "gateway.key")
	csrPath = filepath.Join(dir, "gateway.csr")
	if !force {
		if _, err := os.Lstat(keyPath); err == nil {
			return "", "", fmt.Errorf("%s exists; pass --force to replace it (its certificate stops working)", keyPath)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encode key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: gatewayID},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}, key)
	if err != nil {
		return "", "", fmt.Errorf("create csr: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600, true); err != nil {
		return "", "", err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})
	if err := writeFileAtomic(csrPath, csrPEM, 0o644, true); err != nil {
		return "", "", err
	}
	return keyPath, csrPath, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// folder, created with perm (never wider, whatever the umask), so a reader
// sees the old file or the whole new one. Without replace it fails when
// path exists.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if replace {
		return os.Rename(tmp, path)
	}
	// Link fails when path exists, so nothing is overwritten by a race.
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// handToService makes path readable by the service user when run as root
// on a gateway where that user exists: the key becomes the user's own
// (asOwner), the config stays root's with the user's group. It returns a
// note for the output, empty when nothing changed.
func handToService(path string, asOwner bool) string {
	if os.Geteuid() != 0 {
		return ""
	}
	u, err := user.Lookup(serviceUser)
	if err != nil {
		return ""
	}
	uid, gid := 0, 0
	if asOwner {
		uid, _ = strconv.Atoi(u.Uid)
	}
	gid, _ = strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return ""
	}
	if asOwner {
		return ", owner " + serviceUser
	}
	return " (group " + serviceUser + ")"
}
