package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
)

const dumpUsage = `usage: hearth dump [--out FILE|-] [--socket PATH] [--config FILE]

Writes one support bundle (a .tar.gz) with what the agent knows: its config
with secrets redacted, status, events, points, buffer statistics, links,
lease, its recent log lines and the journal's. Nothing in it is secret: user
names and passwords are redacted, key files are named but never read. When
the agent is not running, the bundle has the config file and the journal.
`

// dumpManifest says what a bundle holds and what could not be had.
type dumpManifest struct {
	Created time.Time         `json:"created"`
	Version string            `json:"cli_version"`
	Host    string            `json:"host"`
	Agent   string            `json:"agent"` // "running", or why not
	Files   []string          `json:"files"`
	Missing map[string]string `json:"missing"` // file → why it is not there
}

// cmdDump is `hearth dump`.
func cmdDump(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth dump", stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), dumpUsage, "\nflags:\n"); fs.PrintDefaults() }
	var f diagFlags
	f.register(fs)
	out := fs.String("out", "", "bundle file (default hearth-dump-GATEWAY-TIME.tar.gz here); - for stdout")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	host, _ := os.Hostname()
	now := time.Now().UTC()
	m := dumpManifest{Created: now, Version: hearth.Version, Host: host, Agent: "running", Missing: map[string]string{}}
	files := map[string][]byte{}
	var order []string
	put := func(name string, data []byte) {
		files[name] = redactText(data)
		order = append(order, name)
	}
	c := diag.NewClient(f.socketPath())
	gateway := "unknown"
	var st diag.StatusReport
	if err := c.Do("GET", "/status", nil, nil, &st); err != nil {
		m.Agent = err.Error()
		fmt.Fprintf(stderr, "hearth dump: %v\n  the bundle holds the config file and the journal only\n", err)
		if cfg, err := config.Read(f.config); err == nil {
			gateway = cfg.GatewayID
			if red, err := cfg.Redacted(); err == nil {
				b, _ := yaml.Marshal(red)
				put("config.yaml", b)
			}
		} else {
			m.Missing["config.yaml"] = fmt.Sprintf("%s: %v", f.config, err)
		}
	} else {
		gateway = st.Agent.GatewayID
		for _, e := range []struct{ name, path string }{
			{"status.json", "/status"}, {"events.json", "/events"}, {"points.json", "/points"},
			{"buffer.json", "/buffer"}, {"lease.json", "/lease"}, {"links.json", "/modbus/links"},
			{"config.yaml", "/config"}, {"logs.txt", "/logs"},
		} {
			var raw json.RawMessage
			if err := c.Do("GET", e.path, nil, nil, &raw); err != nil {
				m.Missing[e.name] = err.Error()
				continue
			}
			switch e.name {
			case "config.yaml":
				put(e.name, yamlFromJSON(raw))
			case "logs.txt":
				var l diag.LogsReport
				json.Unmarshal(raw, &l)
				put(e.name, []byte(strings.Join(l.Lines, "\n")+"\n"))
			default:
				put(e.name, raw)
			}
		}
	}
	if j, err := journal(); err != nil {
		m.Missing["journal.txt"] = err.Error()
	} else {
		put("journal.txt", j)
	}
	m.Files = order
	man, _ := json.MarshalIndent(m, "", "  ")
	put("manifest.json", append(man, '\n'))

	base := fmt.Sprintf("hearth-dump-%s-%s", gateway, now.Format("20060102T150405Z"))
	var buf bytes.Buffer
	if err := writeBundle(&buf, base, files, order); err != nil {
		fmt.Fprintln(stderr, "hearth dump:", err)
		return exitFailed
	}
	switch *out {
	case "-":
		stdout.Write(buf.Bytes())
		return exitOK
	case "":
		*out = base + ".tar.gz"
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o600); err != nil {
		fmt.Fprintf(stderr, "hearth dump: %v\n  write it elsewhere with --out FILE, or to stdout with --out -\n", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "%s: %s (%s)\n", *out, strings.Join(order, ", "), size(int64(buf.Len())))
	for name, why := range m.Missing {
		fmt.Fprintf(stderr, "  not included: %s: %s\n", name, why)
	}
	return exitOK
}

// writeBundle writes files, in order, as base/NAME in a gzipped tar.
func writeBundle(w io.Writer, base string, files map[string][]byte, order []string) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := time.Now()
	for _, name := range order {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: base + "/" + name, Mode: 0o600, Size: int64(len(data)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// journal returns the hearth unit's recent journal, where there is one.
func journal() ([]byte, error) {
	path, err := exec.LookPath("journalctl")
	if err != nil {
		return nil, fmt.Errorf("no journalctl on this system")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-u", "hearth", "-n", "5000", "--no-pager", "-o", "short-iso").Output()
	if err != nil {
		return nil, fmt.Errorf("journalctl: %w", err)
	}
	return out, nil
}

var (
	// userinfo in URLs: scheme://user:password@host.
	urlUserRe = regexp.MustCompile(`([a-z][a-z0-9+.-]*://)[^/@\s"]+@`)
	// key = value and "key": "value" pairs whose key names a secret.
	secretPairRe = regexp.MustCompile(`(?i)("?(?:password|passwd|secret|token)"?\s*[:=]\s*)("[^"]*"|[^\s,}]+)`)
	// PEM blocks of private keys.
	privateKeyRe = regexp.MustCompile(`(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----`)
)

// redactText removes what could be a secret from text going into a
// bundle: credentials in URLs, values of password, secret and token keys,
// private keys. The config is redacted by key already; this catches the
// same in logs and events.
func redactText(b []byte) []byte {
	b = urlUserRe.ReplaceAll(b, []byte("${1}<redacted>@"))
	b = secretPairRe.ReplaceAll(b, []byte(`${1}"<redacted>"`))
	return privateKeyRe.ReplaceAll(b, []byte("<redacted private key>"))
}

// yamlFromJSON writes a JSON document as YAML, whole numbers as integers
// (max_bytes: 268435456, not 2.68435456e+08), so that `hearth config check`
// takes the bundle's config.yaml as the agent's own.
func yamlFromJSON(raw []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	var fix func(any) any
	fix = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = fix(e)
			}
		case []any:
			for i, e := range x {
				x[i] = fix(e)
			}
		case json.Number:
			if n, err := x.Int64(); err == nil {
				return n
			}
			f, _ := x.Float64()
			return f
		}
		return v
	}
	b, err := yaml.Marshal(fix(v))
	if err != nil {
		return raw
	}
	return b
}
