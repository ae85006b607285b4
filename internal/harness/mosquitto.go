// Package harness starts the real things hearth's tests talk to: a
// Mosquitto broker on a free port that a test can kill and restart, a TCP
// proxy whose connections a test can cut, an MQTT subscriber that records
// what arrives, and the hearth agent itself as a child process that a test
// can stop, kill and restart. Everything started here is stopped by
// t.Cleanup.
package harness

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a broker may take to accept connections.
const startTimeout = 10 * time.Second

// Option configures StartMosquitto.
type Option func(*mosqConfig)

type mosqConfig struct {
	tls         bool
	caFile      string
	certFile    string
	keyFile     string
	requireCert bool
	acl         *string
	aclFile     string
	extra       []string
}

// WithTLS makes the broker's only listener a TLS listener using the given
// PEM files. With requireCert, clients must present a certificate signed by
// caFile (mosquitto's require_certificate). URL then has the tls:// scheme.
func WithTLS(caFile, certFile, keyFile string, requireCert bool) Option {
	return func(c *mosqConfig) {
		c.tls = true
		c.caFile, c.certFile, c.keyFile = caFile, certFile, keyFile
		c.requireCert = requireCert
	}
}

// WithConfig appends raw lines to the generated mosquitto.conf, after the
// listener block.
func WithConfig(lines ...string) Option {
	return func(c *mosqConfig) { c.extra = append(c.extra, lines...) }
}

// WithACL makes the broker take each client's certificate common name as
// its user name (use_identity_as_username, so it needs WithTLS with
// requireCert) and apply acl, the text of a mosquitto acl_file, such as
// "pattern readwrite hearth/v1/%u/#". Anything the ACL does not allow is
// dropped by the broker: a refused publish is still acknowledged, and is
// not delivered to subscribers.
func WithACL(acl string) Option {
	return func(c *mosqConfig) { c.acl = &acl }
}

// GatewayACL is the broker setup of docs/mqtt.md for WithACL: each
// gateway (its certificate's common name) confined to its own topics, and
// a user "cloud" that reads and writes them all.
const GatewayACL = `pattern write hearth/v1/%u/telemetry
pattern write hearth/v1/%u/telemetry/backfill
pattern write hearth/v1/%u/event
pattern write hearth/v1/%u/status
pattern write hearth/v1/%u/state
pattern write hearth/v1/%u/setpoint/ack
pattern read hearth/v1/%u/setpoint
pattern readwrite hearth/v1/%u/check

user cloud
topic readwrite hearth/v1/#
`

// Mosquitto is a broker process owned by one test.
type Mosquitto struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	port int
	tls  bool
	process
}

// FindMosquitto returns the path of the mosquitto binary, looking in PATH
// and then in /usr/sbin, which is often not in a test's PATH.
func FindMosquitto() (string, error) {
	return findBinary("mosquitto", "mosquitto", "/usr/sbin", "/usr/local/sbin")
}

// StartMosquitto starts a private Mosquitto broker on a free 127.0.0.1 port
// and returns once it accepts connections. The broker is killed when the
// test ends; its log is printed if the test failed. The test fails at once
// if mosquitto is not installed or does not start.
func StartMosquitto(t testing.TB, opts ...Option) *Mosquitto {
	t.Helper()
	bin, err := FindMosquitto()
	if err != nil {
		t.Fatal(err)
	}
	var cfg mosqConfig
	for _, o := range opts {
		o(&cfg)
	}
	m := &Mosquitto{t: t, bin: bin, dir: t.TempDir(), tls: cfg.tls}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	m.logPath = filepath.Join(m.dir, "mosquitto.log")
	m.cleanup(t, "mosquitto", 0)

	// Another test may grab the free port between FreePort and mosquitto's
	// bind; try a few ports before giving up.
	var lastErr error
	for range 5 {
		m.port = FreePort(t)
		if cfg.acl != nil {
			cfg.aclFile = filepath.Join(m.dir, "acl")
			if err := os.WriteFile(cfg.aclFile, []byte(*cfg.acl+"\n"), 0o600); err != nil {
				t.Fatalf("write acl: %v", err)
			}
		}
		if err := os.WriteFile(m.conf, cfg.render(m.port), 0o600); err != nil {
			t.Fatalf("write mosquitto config: %v", err)
		}
		if lastErr = m.start(startTimeout); lastErr == nil {
			return m
		}
	}
	t.Fatalf("start mosquitto: %v", lastErr)
	return nil
}

func (c *mosqConfig) render(port int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", port)
	b.WriteString("allow_anonymous true\n")
	if c.tls {
		fmt.Fprintf(&b, "cafile %s\ncertfile %s\nkeyfile %s\n", c.caFile, c.certFile, c.keyFile)
		fmt.Fprintf(&b, "require_certificate %t\n", c.requireCert)
	}
	if c.aclFile != "" {
		fmt.Fprintf(&b, "use_identity_as_username true\nacl_file %s\n", c.aclFile)
	}
	b.WriteString("persistence false\n")
	b.WriteString("log_dest stderr\nlog_type all\nconnection_messages true\n")
	// Run as root, mosquitto would switch to the "mosquitto" user and then
	// be unable to read certificates in the test's private temp dir.
	if os.Geteuid() == 0 {
		b.WriteString("user root\n")
	}
	for _, l := range c.extra {
		b.WriteString(l + "\n")
	}
	return b.Bytes()
}

// start launches the broker and waits until its port accepts, or it
// exits, or timeout passes.
func (m *Mosquitto) start(timeout time.Duration) error {
	return m.process.start(m.bin, []string{"-c", m.conf}, m.Addr(), timeout)
}

// Log returns what the broker has logged so far.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(m.logPath)
	return string(b)
}

// Addr returns the broker's host:port.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Port returns the broker's TCP port.
func (m *Mosquitto) Port() int { return m.port }

// URL returns the broker URL for an MQTT client: tcp://127.0.0.1:PORT, or
// tls://127.0.0.1:PORT for a broker started WithTLS.
func (m *Mosquitto) URL() string {
	if m.tls {
		return "tls://" + m.Addr()
	}
	return "tcp://" + m.Addr()
}

// Stop kills the broker with SIGKILL and waits for it to exit. Clients see
// their connections drop; nothing is persisted. Stopping a stopped broker
// does nothing.
func (m *Mosquitto) Stop() { m.stop() }

// Start restarts a stopped broker on the same port, retrying while the
// port is still held (for example by a lingering socket), and fails the
// test if it does not come up. Call it from the test goroutine.
func (m *Mosquitto) Start() {
	m.t.Helper()
	restart(m.t, &m.process, fmt.Sprintf("mosquitto on port %d", m.port), m.start)
}

// restart starts a stopped server with start, retrying while its port is
// still held (for example by a lingering socket) until startTimeout, and
// fails t if it does not come up.
func restart(t testing.TB, p *process, name string, start func(timeout time.Duration) error) {
	t.Helper()
	if p.running() {
		t.Fatalf("%s: Start while running", name)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		err := start(time.Until(deadline))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that no other test using this package, in this test binary or any
// other, is handed while this binary runs.
//
// It picks below the kernel's ephemeral range (32768 and up on Linux): a
// port the kernel hands out itself is also handed to the next outgoing
// connection of any process, which can take it between this check and
// the server's bind. Test binaries run side by side (make test runs
// packages in parallel) and a check alone cannot keep them apart: one of
// them may be between its check and its server's bind, or a server of a
// test that ended may still be stopping (a test's cleanups run in reverse
// order of registration, so a server started after FreePort stops after
// any release at cleanup would have run). So each port handed out is
// reserved with an exclusive lock on a file named for it, held until the
// binary exits, and a port whose lock another binary holds is skipped.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		p := freePortLow + rand.IntN(freePortHigh-freePortLow)
		f, ok := reservePort(p)
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			f.Close()
			continue
		}
		l.Close()
		reservedMu.Lock()
		reserved = append(reserved, f) // kept open: the lock lasts while the binary runs
		reservedMu.Unlock()
		return p
	}
	t.Fatalf("free port: no port in %d-%d was both unreserved and bindable in 200 draws (is %s writable?)", freePortLow, freePortHigh, portDir())
	return 0
}

// reserved holds the files whose locks reserve the ports handed out.
var (
	reservedMu sync.Mutex
	reserved   []*os.File
)

func portDir() string { return filepath.Join(os.TempDir(), "hearth-test-ports") }

// reservePort takes the exclusive lock on port p's file and returns the
// open file that holds it. The lock is held by the open file, so a test
// binary that dies lets go of it too; a second open, as another binary
// would make, cannot take it.
func reservePort(p int) (*os.File, bool) {
	if err := os.MkdirAll(portDir(), 0o777); err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(portDir(), strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// The range FreePort draws from: above the well-known and common service
// ports, below the ephemeral range.
const freePortLow, freePortHigh = 20000, 32000
