package main

import (
	"crypto/ed25519"
	"encoding/json"
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
	waitUplinkStatus(dir, time.Minute, func(u uplinkStatus) bool { return u.Connected })
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
// it is on once its connection has lasted, runs times. Two figures, from
// the kill (SIGKILL) on: failover_redial_s to the agent's first TCP
// connection to a surviving node (its status's last_dial: loss detection,
// its jitter, the dial), hearth's part; failover_reconnect_s to its
// connection there being up (connected_since: CONNACK and SUBACK), which
// adds what the surviving nodes took to answer, and the agent's jitter
// before the next node when one closed the connection instead.
func (r *run) failover(runs int) {
	pub, _, _ := ed25519.GenerateKey(nil)
	var redial, reconnect []float64
	var rows []string
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
		// A connection that lasted (30 s): its loss takes the path a
		// gateway's long-lived connection takes, a jitter and the next
		// node, not the back-off of a connection dropped at once.
		up := waitUplinkStatus(dir, 60*time.Second, func(u uplinkStatus) bool { return u.Connected })
		time.Sleep(time.Until(up.ConnectedSince.Add(31 * time.Second)))
		before := waitUplinkStatus(dir, time.Minute, func(u uplinkStatus) bool { return u.Connected })
		if !before.ConnectedSince.Equal(up.ConnectedSince) {
			panic(fmt.Sprintf("failover %d: the agent reconnected before the kill", i+1))
		}
		on := before.Broker
		killed := time.Now()
		byURL[on].Stop()
		var dialed time.Time
		after := waitUplinkStatus(dir, 5*time.Minute, func(u uplinkStatus) bool {
			if dialed.IsZero() && u.LastDial.Broker != on && u.LastDial.At.After(killed) {
				dialed = u.LastDial.At
			}
			return u.Connected && u.Broker != on
		})
		if dialed.IsZero() || dialed.After(after.ConnectedSince) {
			dialed = after.LastDial.At // dialed and connected between two polls
		}
		rd, rc := dialed.Sub(killed).Seconds(), after.ConnectedSince.Sub(killed).Seconds()
		redial, reconnect = append(redial, rd), append(reconnect, rc)
		refused := after.Attempts - before.Attempts - 1
		why := "the first surviving node dialed answered"
		if refused > 0 {
			why = fmt.Sprintf("%d attempt(s) failed first (agent: %s)", refused, after.LastError)
			for _, n := range nodes {
				if n != byURL[on] {
					if said := refusal(n.Log(), fmt.Sprintf("hearth-gw-failover-%d", i)); said != "" {
						why += "; " + n.URL() + " said: " + said
					}
				}
			}
		}
		rows = append(rows, fmt.Sprintf("| %d | %.2f | %.2f | %.2f | %s |", i+1, rd, rc, after.ConnectedSince.Sub(after.LastDial.At).Seconds(), why))
		logf("failover %d: from %s: dialed a surviving node after %.2f s, connected to %s after %.2f s; %s", i+1, on, rd, after.Broker, rc, why)
		a.Kill()
		for _, n := range nodes {
			n.Stop()
		}
	}
	r.results["failover_redial_s"] = round(median(redial), 2)
	r.notes["failover_redial_s"] = fmt.Sprintf("median of %d: 3-node NATS cluster (MQTT, JetStream), default back-off (backoff_min 1s), a connection that had lasted 30 s: SIGKILL of the agent's node to its first TCP connection to a surviving node (status last_dial): loss detection, a jitter of at most backoff_min, the dial; hearth's part", runs)
	r.results["failover_reconnect_s"] = round(median(reconnect), 2)
	r.notes["failover_reconnect_s"] = fmt.Sprintf("median of %d: the same kill to the agent connected to a surviving node (status connected_since: CONNACK and SUBACK): failover_redial_s plus what the surviving nodes took to answer (JetStream re-electing the leaders the killed node held) and the agent's jitter before the next node when one closed the connection instead", runs)
	r.sections[len(r.sections)-1] += fmt.Sprintf("\nFailover: the agent (uplink.brokers: the three nodes of a NATS cluster, MQTT sessions in JetStream, default back-off) "+
		"had been connected to one node for 30 s when that node was SIGKILLed. From the kill, **%.2f s** (median of %d) to its first TCP connection to a surviving node "+
		"(`failover_redial_s`, the status's `last_dial`: loss detection, a jitter of at most backoff_min, 1 s, the dial: hearth's part), and **%.2f s** to its connection there being up "+
		"(`failover_reconnect_s`, `connected_since`: CONNACK and SUBACK). The status was polled every 20 ms, the times are the agent's own stamps. "+
		"A surviving node may hold a CONNECT until the cluster has re-elected the JetStream leaders the killed node held, and then close the connection (NATS's own JetStream API timeout, about 4 s); "+
		"the agent then tries the next node after another jitter.\n\n"+
		"| run | redial s | reconnect s | last dial → up s | |\n|---|---|---|---|---|\n%s\n",
		median(redial), runs, median(reconnect), strings.Join(rows, "\n"))
}

// refusal returns what a NATS node last logged when it refused client's
// MQTT connection ("unable to connect: …"), "" when it did not.
func refusal(log, client string) string {
	said := ""
	for line := range strings.SplitSeq(log, "\n") {
		if _, s, ok := strings.Cut(line, `"`+client+`" - unable to connect: `); ok {
			said = s
		}
	}
	if len(said) > 140 {
		said = said[:140] + "…"
	}
	return said
}

// uplinkStatus is the uplink part of the agent's status.
type uplinkStatus struct {
	Connected      bool      `json:"connected"`
	Broker         string    `json:"broker"`
	ConnectedSince time.Time `json:"connected_since"`
	Attempts       int       `json:"attempts"`
	LastError      string    `json:"last_error"`
	LastDial       struct {
		Broker string    `json:"broker"`
		At     time.Time `json:"at"`
	} `json:"last_dial"`
}

// waitUplinkStatus polls the agent's status in dir every 20 ms until cond
// holds, and returns the uplink status then.
func waitUplinkStatus(dir string, within time.Duration, cond func(uplinkStatus) bool) uplinkStatus {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var st struct {
			Uplink *uplinkStatus `json:"uplink"`
		}
		if b, err := json.Marshal(diag(dir, "status")); err == nil && json.Unmarshal(b, &st) == nil && st.Uplink != nil && cond(*st.Uplink) {
			return *st.Uplink
		}
		time.Sleep(20 * time.Millisecond)
	}
	panic(fmt.Sprintf("agent in %s: uplink status not reached within %s", dir, within))
}
