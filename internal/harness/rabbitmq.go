package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RabbitMQ is a RabbitMQ node of the test's own with its MQTT plugin: its
// own node name, ports, Erlang port mapper, cookie and data directories,
// so a node the machine may run is never touched. A third MQTT 3.1.1
// broker, Erlang's, with sessions kept in queues.
type RabbitMQ struct {
	port int // MQTT
	epmd process
	process
}

// rabbitStartTimeout bounds a RabbitMQ boot: the Erlang VM, Mnesia and
// the plugins take tens of seconds on a loaded machine.
const rabbitStartTimeout = 120 * time.Second

// FindRabbitMQ returns the rabbitmq-server start script that runs a node in
// the foreground with the caller's environment (Debian's wrapper in
// /usr/sbin switches to the system node's user and directories, so it is
// not used), and Erlang's epmd.
func FindRabbitMQ() (server, epmd string, err error) {
	server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(server); err != nil {
		return "", "", fmt.Errorf("rabbitmq-server not found (%s): apt-get install rabbitmq-server", server)
	}
	if p, err := exec.LookPath("epmd"); err == nil {
		return server, p, nil
	}
	m, _ := filepath.Glob("/usr/lib/erlang/erts-*/bin/epmd")
	if len(m) == 0 {
		return "", "", fmt.Errorf("epmd not found: apt-get install erlang-base")
	}
	return server, m[len(m)-1], nil
}

// StartRabbitMQ starts a private RabbitMQ node with the MQTT plugin on
// free 127.0.0.1 ports and returns once an MQTT client is acknowledged a
// QoS 1 publish. The test is skipped if RabbitMQ is not installed; it
// fails if the node does not start within rabbitStartTimeout.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	server, epmd, err := FindRabbitMQ()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	r := &RabbitMQ{port: FreePort(t)}
	amqp, dist, epmdPort := FreePort(t), FreePort(t), FreePort(t)
	for _, d := range []string{"home", "mnesia", "log", "plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"enabled_plugins": "[rabbitmq_mqtt].\n",
		"rabbitmq.conf": fmt.Sprintf(`listeners.tcp.default = 127.0.0.1:%d
mqtt.listeners.tcp.default = 127.0.0.1:%d
mqtt.allow_anonymous = true
loopback_users = none
`, amqp, r.port),
		"home/.erlang.cookie": fmt.Sprintf("HEARTHTEST%d", r.port),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.epmd.logPath = filepath.Join(dir, "epmd.log")
	r.logPath = filepath.Join(dir, "rabbitmq.log")
	t.Cleanup(r.epmd.stop) // after the node
	r.cleanup(t, "rabbitmq", 40)
	epmdAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(epmdPort))
	if err := r.epmd.start(epmd, []string{"-port", strconv.Itoa(epmdPort), "-address", "127.0.0.1"}, epmdAddr, startTimeout); err != nil {
		t.Fatalf("start epmd: %v", err)
	}
	env := []string{
		"HOME=" + filepath.Join(dir, "home"),
		fmt.Sprintf("RABBITMQ_NODENAME=hearthtest%d@localhost", r.port),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", amqp),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist),
		fmt.Sprintf("ERL_EPMD_PORT=%d", epmdPort),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_LOGS=-",
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PLUGINS_EXPAND_DIR=" + filepath.Join(dir, "plugins"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(dir, "rabbitmq-env.conf"),
		// The start script then execs the Erlang VM instead of running it
		// as a child: the process the harness kills is the node itself.
		"RUNNING_UNDER_SYSTEMD=true",
		"PATH=" + os.Getenv("PATH") + ":/usr/lib/rabbitmq/bin:/usr/sbin",
	}
	if err := r.startEnv(server, nil, env, r.Addr(), rabbitStartTimeout); err != nil {
		t.Fatalf("start rabbitmq: %v", err)
	}
	if err := mqttReady(r.URL(), rabbitStartTimeout); err != nil {
		t.Fatalf("rabbitmq mqtt: %v (log: %s)", err, strings.TrimSpace(r.tailLog()))
	}
	return r
}

// Addr returns the MQTT listener's host:port.
func (r *RabbitMQ) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL returns tcp://ADDR of the MQTT listener.
func (r *RabbitMQ) URL() string { return "tcp://" + r.Addr() }

// Stop kills the node (SIGKILL) and waits for it to exit.
func (r *RabbitMQ) Stop() { r.stop() }
