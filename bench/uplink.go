package main

import (
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

// wireCase is one telemetry configuration measured on the wire.
type wireCase struct {
	name, how, extra string
}

// wire runs the real agent with four simulated devices at 1 Hz against
// Mosquitto over TLS, through a proxy that counts every byte both ways
// above TCP, once per telemetry format, and reports the bytes over the
// window, after a warm-up, divided by the readings taken in it.
func (r *run) wire(window time.Duration) {
	certs := harness.GenerateCerts(r.tb)
	mq := harness.StartMosquitto(r.tb, harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, false))
	pub, _, _ := ed25519.GenerateKey(nil)
	cases := []wireCase{
		{"json", "uplink.telemetry_format: json, telemetry_window: 0s: one object per reading, sent each poll cycle (the format before lean)",
			"  telemetry_format: json\n  telemetry_window: 0s\n"},
		{"lean", "the default: lean, gzipped when it pays, telemetry_window 5s", ""},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Uplink: bytes on the wire and failover\n\n"+
		"The hearth binary, four simulators at 1 Hz, Mosquitto over TLS (the agent verifies it with ca_file), through a proxy that counts "+
		"every byte forwarded both ways above TCP (TLS records, MQTT, PUBACKs, keepalives, the heartbeat status; not TCP/IP headers). "+
		"Window %s after a 15 s warm-up; bytes divided by the readings taken in the window (the seqs the agent assigned). "+
		"Rerun: `go run ./bench -only uplink -wire-window %s -failover-runs %d`.\n\n", window, window, r.failoverRuns)
	b.WriteString("| format | how | bytes | readings | **B / reading** | B / device / day at 1 Hz |\n|---|---|---|---|---|---|\n")
	for _, c := range cases {
		per, bytes, n := r.wireRun(c, mq, certs.CAFile, pub, window)
		r.results["wire_bytes_per_reading_"+c.name] = round(per, 1)
		r.notes["wire_bytes_per_reading_"+c.name] = "TLS, 4 devices at 1 Hz, " + window.String() + " window after warm-up, bytes both ways above TCP / readings: " + c.how
		fmt.Fprintf(&b, "| %s | %s | %d | %d | **%.1f** | %.1f MB |\n", c.name, c.how, bytes, n, per, per*86400/1e6)
		logf("wire %s: %d B for %d readings: %.1f B/reading", c.name, bytes, n, per)
	}
	r.results["wire_bytes_per_reading"] = r.results["wire_bytes_per_reading_lean"]
	r.notes["wire_bytes_per_reading"] = "the default config (lean, 5 s window): see wire_bytes_per_reading_lean; goal ≤ 60"
	r.sections = append(r.sections, b.String())
}

func (r *run) wireRun(c wireCase, mq *harness.Mosquitto, ca string, pub ed25519.PublicKey, window time.Duration) (per float64, bytes int64, readings uint64) {
	px := harness.StartProxy(r.tb, mq.Addr())
	_, addrs := r.sims(4)
	dir := r.tb.TempDir()
	a := r.startAgentWith(r.hearth, "gw-wire-"+c.name, dir, dir, fmt.Sprintf("tls://127.0.0.1:%d", px.Port()), addrs, "1s", pub,
		"  ca_file: "+ca+"\n"+c.extra)
	defer a.Kill()
	waitUplink(dir, time.Minute, func(u uplinkStatus) bool { return u.Connected })
	time.Sleep(15 * time.Second)
	seq0, b0 := lastSeq(dir), px.Bytes()
	time.Sleep(window)
	seq1, b1 := lastSeq(dir), px.Bytes()
	readings, bytes = seq1-seq0, b1-b0
	if readings == 0 {
		panic("wire " + c.name + ": no reading in the window")
	}
	return float64(bytes) / float64(readings), bytes, readings
}

// lastSeq is the last seq the agent in dir gave a reading.
func lastSeq(dir string) uint64 {
	v, _ := diag(dir, "buffer")["last_seq"].(float64)
	return uint64(v)
}

// startAgentBrokers starts the agent with uplink.brokers, one device at 1 Hz.
func (r *run) startAgentBrokers(gw, dir string, brokers, addrs []string, pub ed25519.PublicKey) *harness.Agent {
	extra := "  brokers:\n"
	for _, u := range brokers {
		extra += "    - " + u + "\n"
	}
	return r.startAgentWith(r.hearth, gw, dir, dir, "", addrs, "1s", pub, extra)
}

// failover runs the agent against a 3-node NATS cluster and kills the node
// it is on, runs times: the seconds from the kill to the agent's status
// naming another node, connected.
func (r *run) failover(runs int) {
	pub, _, _ := ed25519.GenerateKey(nil)
	var secs []float64
	for i := range runs {
		nodes := harness.StartNATSCluster(r.tb, 3)
		var urls []string
		byURL := map[string]*harness.NATS{}
		for _, n := range nodes {
			urls = append(urls, n.URL())
			byURL[n.URL()] = n
		}
		_, addrs := r.sims(1)
		dir := r.tb.TempDir()
		a := r.startAgentBrokers(fmt.Sprintf("gw-failover-%d", i), dir, urls, addrs, pub)
		on := waitUplink(dir, 60*time.Second, func(u uplinkStatus) bool { return u.Connected })
		killed := time.Now()
		byURL[on].Stop()
		waitUplink(dir, 5*time.Minute, func(u uplinkStatus) bool { return u.Connected && u.Broker != on })
		d := time.Since(killed).Seconds()
		secs = append(secs, d)
		logf("failover %d: from %s, connected to another node after %.2f s", i+1, on, d)
		a.Kill()
		for _, n := range nodes {
			n.Stop()
		}
	}
	r.results["failover_reconnect_s"] = round(median(secs), 2)
	r.notes["failover_reconnect_s"] = fmt.Sprintf("median of %d: 3-node NATS cluster (MQTT, JetStream), the agent on default back-off (backoff_min 1s): SIGKILL of its node to its status connected to another node", runs)
	shown := make([]string, len(secs))
	for i, v := range secs {
		shown[i] = fmt.Sprintf("%.2f", v)
	}
	r.sections[len(r.sections)-1] += fmt.Sprintf("\nFailover: the agent (uplink.brokers: the three nodes of a NATS cluster, default back-off) was connected to a surviving node "+
		"%.2f s (median of %d runs: %s s) after its node was SIGKILLed, as its diagnostics status (polled every 20 ms) reported. "+
		"How that time divides between the agent (loss detection, a jitter of at most backoff_min, 1 s) and the cluster was not measured.\n",
		median(secs), runs, strings.Join(shown, ", "))
}

type uplinkStatus struct {
	Connected bool   `json:"connected"`
	Broker    string `json:"broker"`
}

// waitUplink polls the agent's status in dir until cond holds, and returns
// the node it names.
func waitUplink(dir string, within time.Duration, cond func(uplinkStatus) bool) string {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st := diag(dir, "status")
		if u, ok := st["uplink"].(map[string]any); ok {
			s := uplinkStatus{}
			s.Connected, _ = u["connected"].(bool)
			s.Broker, _ = u["broker"].(string)
			if cond(s) {
				return s.Broker
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	panic(fmt.Sprintf("agent in %s: uplink status not reached within %s", dir, within))
}
