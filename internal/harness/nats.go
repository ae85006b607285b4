package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// NATS is a nats-server process with its MQTT listener, owned by one test:
// a second MQTT 3.1.1 broker, with another implementation's reading of the
// protocol (sessions and QoS 1 are kept in JetStream).
type NATS struct {
	t    testing.TB
	bin  string
	dir  string
	port int // MQTT
	process
}

// FindNATS returns the path of the nats-server binary, looking in PATH and
// then in /usr/sbin.
func FindNATS() (string, error) {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/local/bin/nats-server"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("nats-server not found: apt-get install nats-server")
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
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(n.logPath); err == nil {
				t.Logf("nats-server log (mqtt port %d):\n%s", n.port, b)
			}
		}
	})
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
		confPath := filepath.Join(n.dir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if lastErr = n.start(confPath); lastErr == nil {
			return n
		}
	}
	t.Fatalf("start nats-server: %v", lastErr)
	return nil
}

func (n *NATS) start(conf string) error {
	return n.process.start(n.bin, []string{"-c", conf}, n.Addr(), startTimeout)
}

// Addr returns the MQTT listener's host:port.
func (n *NATS) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// URL returns tcp://ADDR of the MQTT listener.
func (n *NATS) URL() string { return "tcp://" + n.Addr() }

// Stop kills the server and waits for it to exit.
func (n *NATS) Stop() { n.stop() }
