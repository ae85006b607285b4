package harness

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NATS is a nats-server process with its MQTT listener, owned by one test:
// a second MQTT 3.1.1 broker, with another implementation's reading of the
// protocol (sessions and QoS 1 are kept in JetStream).
type NATS struct {
	t    testing.TB
	bin  string
	dir  string
	conf string // the config file, kept for a restart
	port int    // MQTT
	process
}

// FindNATS returns the path of the nats-server binary, looking in PATH and
// then in /usr/sbin.
func FindNATS() (string, error) {
	return findBinary("nats-server", "nats-server", "/usr/sbin", "/usr/local/bin")
}

// StartNATS starts a private nats-server with JetStream and an MQTT
// listener on a free 127.0.0.1 port, and returns once the MQTT port
// accepts connections. The test is skipped if nats-server is not
// installed; it fails if the server does not start.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	bin, err := FindNATS()
	if err != nil {
		t.Skip(err)
	}
	n := &NATS{t: t, bin: bin, dir: t.TempDir()}
	n.logPath = filepath.Join(n.dir, "nats.log")
	n.cleanup(t, "nats-server", 0)
	var lastErr error
	for range 5 {
		n.port = FreePort(t)
		conf := fmt.Sprintf(`server_name: hearth-test-%d
listen: 127.0.0.1:-1
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 256MB
}
mqtt {
  listen: 127.0.0.1:%d
  ack_wait: "5s"
}
`, n.port, filepath.Join(n.dir, "js"), n.port)
		n.conf = filepath.Join(n.dir, "nats.conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if lastErr = n.start(); lastErr == nil {
			return n
		}
	}
	t.Fatalf("start nats-server: %v", lastErr)
	return nil
}

func (n *NATS) start() error {
	return n.process.start(n.bin, []string{"-c", n.conf}, n.Addr(), startTimeout)
}

// Addr returns the MQTT listener's host:port.
func (n *NATS) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// URL returns tcp://ADDR of the MQTT listener.
func (n *NATS) URL() string { return "tcp://" + n.Addr() }

// Stop kills the server (SIGKILL) and waits for it to exit.
func (n *NATS) Stop() { n.stop() }

// Running reports whether the server runs.
func (n *NATS) Running() bool { return n.running() }

// Log returns what the server has logged so far, across restarts.
func (n *NATS) Log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// Start restarts a stopped server with its config, ports and store, and
// fails the test if it does not come up. Call it from the test goroutine.
func (n *NATS) Start() {
	n.t.Helper()
	restart(n.t, &n.process, fmt.Sprintf("nats-server on mqtt port %d", n.port), func(time.Duration) error { return n.start() })
}

// StartNATSCluster starts a cluster of n nats-server nodes of the test's
// own, routed to one another on loopback ports, each with JetStream (its
// own store) and an MQTT listener; MQTT sessions and QoS 1 messages are
// replicated to min(n, 3) nodes. It returns once every node's MQTT port
// accepts and an MQTT client has been acknowledged a QoS 1 publish through
// each node, so the JetStream cluster has its leaders. Skipped without
// nats-server.
func StartNATSCluster(t testing.TB, n int) []*NATS {
	t.Helper()
	bin, err := FindNATS()
	if err != nil {
		t.Skip(err)
	}
	// A free port may be taken by another process before the server binds
	// it: a cluster that does not start is tried again on other ports.
	for attempt := 1; ; attempt++ {
		nodes, err := startNATSCluster(t, bin, n)
		if err == nil {
			return nodes
		}
		for _, nd := range nodes {
			nd.Stop()
		}
		if attempt == 3 {
			t.Fatalf("start nats cluster: %v", err)
		}
		t.Logf("start nats cluster (attempt %d): %v; again on other ports", attempt, err)
	}
}

func startNATSCluster(t testing.TB, bin string, n int) ([]*NATS, error) {
	dir := t.TempDir()
	name := fmt.Sprintf("hearth-%d", FreePort(t))
	nodes := make([]*NATS, n)
	routes := make([]string, n)
	clientPorts := make([]int, n)
	for i := range nodes {
		nodes[i] = &NATS{t: t, bin: bin, dir: filepath.Join(dir, fmt.Sprintf("n%d", i)), port: FreePort(t)}
		clientPorts[i] = FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", FreePort(t))
	}
	for i, nd := range nodes {
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		nd.logPath = filepath.Join(nd.dir, "nats.log")
		nd.conf = filepath.Join(nd.dir, "nats.conf")
		conf := fmt.Sprintf(`server_name: %s-n%d
listen: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 256MB
}
cluster {
  name: %s
  listen: %s
  routes: [%s]
}
mqtt {
  listen: 127.0.0.1:%d
  ack_wait: "5s"
  stream_replicas: %d
}
`, name, i, clientPorts[i], filepath.Join(nd.dir, "js"), name, strings.TrimPrefix(routes[i], "nats-route://"),
			strings.Join(routes, ", "), nd.port, min(n, 3))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		nd.cleanup(t, fmt.Sprintf("nats-server %d", i), 40)
	}
	// Each node waits for the others' routes: start them all, then wait.
	errs := make(chan error, n)
	for _, nd := range nodes {
		go func() { errs <- nd.start() }()
	}
	var first error
	for range nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return nodes, first
	}
	for i, nd := range nodes {
		if err := mqttReady(nd.URL(), startTimeout); err != nil {
			return nodes, fmt.Errorf("node %d: %v", i, err)
		}
	}
	return nodes, nil
}

// mqttReady retries an MQTT connect and QoS 1 publish to url until the
// PUBACK arrives or timeout passes.
func mqttReady(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = publishOnce(url, "ready-", "hearth-ready", []byte("ready"), 2*time.Second, 3*time.Second); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", timeout, err)
}
