// Package e2e runs hearth as users do: the real binaries as child
// processes, a real Mosquitto, simulated and third-party Modbus devices on
// real sockets. Faults are injected from outside, and invariants checked
// on what the broker and the devices saw.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/uplink"
)

// hearthBin is the agent binary built once for the package's tests.
var hearthBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hearth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Tests run the CLI as an unprivileged user too: it must reach the binary.
	os.Chmod(dir, 0o755)
	hearthBin = filepath.Join(dir, "hearth")
	out, err := exec.Command("go", append(append([]string{"build", "-race"}, harness.BuildFlags()...), "-o", hearthBin, "../cmd/hearth")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build hearth: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	fmt.Fprintln(os.Stderr, contract.Summary())
	for _, a := range contract.Unused() {
		fmt.Fprintf(os.Stderr, "contract: allowance no longer needed in this run: %s %q (%s)\n", a.Kind, a.Match, a.Fix)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// contract holds every payload the tests' agents publish to the MQTT
// contract (docs/schemas), letting pass only the breaches being fixed in
// package control (harness.PendingControlFixes).
var contract = harness.NewContract(harness.SchemaDir(), harness.PendingControlFixes...)

// subscribe is harness.Subscribe, with what arrives held to the contract
// when the test ends.
func subscribe(t *testing.T, url, topic string) *harness.Recorder {
	t.Helper()
	rec := harness.Subscribe(t, url, topic)
	contract.Watch(t, rec)
	return rec
}

// startBroker is harness.StartMosquitto (plain TCP) with everything
// gateways publish on it held to the contract, until it is restarted.
func startBroker(t *testing.T, opts ...harness.Option) *harness.Mosquitto {
	t.Helper()
	m := harness.StartMosquitto(t, opts...)
	subscribe(t, m.URL(), "hearth/v1/#")
	return m
}

// agentConfig is the config the tests run the agent with.
const agentConfig = `gateway_id: {{.GatewayID}}
data_dir: {{.DataDir}}
diag_socket: {{.DataDir}}/hearth.sock
devices:
{{- range .Devices}}
  - name: {{.Name}}
    transport: tcp
    address: {{.Address}}
    poll_interval: {{$.Poll}}
    timeout: 500ms
{{- end}}
uplink:
  broker: {{.Broker}}
  boot_delay: 0s
`

type devSpec struct{ Name, Address string }

// writeConfig renders the agent config into dir and returns its path.
func writeConfig(t *testing.T, dir, gateway, broker, poll string, devs []devSpec) string {
	t.Helper()
	var b bytes.Buffer
	err := template.Must(template.New("cfg").Parse(agentConfig)).Execute(&b, map[string]any{
		"GatewayID": gateway, "DataDir": dir, "Devices": devs, "Broker": broker, "Poll": poll,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAgent runs `hearth run --log-level debug` with the config at cfg;
// the process is killed when the test ends if it is still running.
func startAgent(t *testing.T, cfg string) *harness.Agent {
	t.Helper()
	return harness.StartAgent(t, hearthBin, harness.AgentOptions{Config: cfg, Args: []string{"--log-level", "debug"}})
}

// startReporting subscribes to everything gateway gw publishes (held to
// the contract), runs the agent on cfg and waits for its first reading.
func startReporting(t *testing.T, broker, gw, cfg string) (*harness.Agent, *harness.Recorder) {
	t.Helper()
	rec := subscribe(t, broker, "hearth/v1/"+gw+"/#")
	a := startAgent(t, cfg)
	rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool { return len(readings(t, m, gw)) > 0 })
	return a, rec
}

// readings decodes every reading in the recorded telemetry messages.
func readings(t *testing.T, msgs []harness.Message, gateway string) []hearth.Reading {
	t.Helper()
	var out []hearth.Reading
	for _, m := range msgs {
		if m.Topic != "hearth/v1/"+gateway+"/telemetry" && m.Topic != "hearth/v1/"+gateway+"/telemetry/backfill" {
			continue
		}
		batch, err := uplink.DecodeTelemetry(m.Payload)
		if err != nil {
			t.Fatalf("telemetry on %s does not decode: %v\n%q", m.Topic, err, m.Payload)
		}
		out = append(out, batch.Readings...)
	}
	return out
}

// startFixture runs a helper program that prints one JSON line describing
// itself and then serves until killed.
func startFixture(t *testing.T, name string, args ...string) map[string]json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr harness.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatalf("%s exited before describing itself; stderr:\n%s", name, stderr.String())
		}
		var desc map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &desc); err != nil {
			t.Fatalf("%s printed %q: %v", name, l, err)
		}
		return desc
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start within 20 s; stderr:\n%s", name, stderr.String())
	}
	return nil
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s is not accepting connections", addr)
}

func hasTopic(msgs []harness.Message, topic string, contains string) bool {
	for _, m := range msgs {
		if m.Topic == topic && strings.Contains(string(m.Payload), contains) {
			return true
		}
	}
	return false
}

// runBinary runs bin with args (as the given user when cred is set), for
// at most 30 s, and returns its stdout, stderr and exit code.
func runBinary(t *testing.T, cred *syscall.Credential, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb harness.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s %v: %v", filepath.Base(bin), args, err)
	}
	return out.String(), errb.String(), code
}

// newAgentConfig writes a config for gateway, in a folder of the test's own
// that is also its data_dir and holds its socket, followed by rest (the
// devices and uplink sections), and returns the folder, the socket and
// the config file.
func newAgentConfig(t *testing.T, gateway, rest string) (dir, sock, cfg string) {
	t.Helper()
	dir = t.TempDir()
	sock = filepath.Join(dir, "hearth.sock")
	cfg = filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(cfg, []byte("gateway_id: "+gateway+"\ndata_dir: "+dir+"\ndiag_socket: "+sock+"\n"+rest), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, sock, cfg
}

// powerLease is a lease for gw as the cloud writes it: mode power at w
// from issued until until, falling back to auto.
func powerLease(id, gw string, version uint64, issued, until time.Time, w float64) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "version": version, "gateway": gw,
		"issued_at": issued.UTC().Format(time.RFC3339), "valid_until": until.UTC().Format(time.RFC3339),
		"mode": "power", "power_w": w, "fallback": "auto"})
	return b
}

// acks decodes the acks gw published among msgs.
func acks(t *testing.T, msgs []harness.Message, gw string) []hearth.Ack {
	t.Helper()
	var out []hearth.Ack
	for _, m := range msgs {
		if m.Topic != "hearth/v1/"+gw+"/setpoint/ack" {
			continue
		}
		var a hearth.Ack
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			t.Fatalf("ack is not JSON: %s", m.Payload)
		}
		out = append(out, a)
	}
	return out
}

// sendSetpoint publishes payload to gw's setpoint topic, whoever it was
// made for, and returns the first ack rec receives after those it had.
func sendSetpoint(t *testing.T, rec *harness.Recorder, broker, gw string, payload []byte) hearth.Ack {
	t.Helper()
	n := len(acks(t, rec.Messages(), gw))
	harness.Publish(t, broker, "hearth/v1/"+gw+"/setpoint", payload, false)
	msgs := rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool { return len(acks(t, m, gw)) > n })
	return acks(t, msgs, gw)[n]
}
