package faults

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/uplink"
)

// Binaries built once by TestMain, without the race detector: the agent
// runs as it would on a gateway, so its memory figures mean something.
var hearthBin, hearthsimBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hearth-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hearthBin = filepath.Join(dir, "hearth")
	hearthsimBin = filepath.Join(dir, "hearthsim")
	for bin, pkg := range map[string]string{hearthBin: "../cmd/hearth", hearthsimBin: "../cmd/hearthsim"} {
		if out, err := exec.Command("go", append(append([]string{"build"}, harness.BuildFlags()...), "-o", bin, pkg)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	reportContract()
	os.RemoveAll(dir)
	os.Exit(code)
}

// contract holds every payload the scenarios' agents publish to the MQTT
// contract (docs/schemas), letting pass only the breaches being fixed in
// package control (harness.PendingControlFixes).
var contract = harness.NewContract(harness.SchemaDir(), harness.PendingControlFixes...)

// reportContract says what the run validated, and which known breaches no
// longer occur (their allowance can go).
func reportContract() {
	fmt.Fprintln(os.Stderr, contract.Summary())
	for _, a := range contract.Unused() {
		fmt.Fprintf(os.Stderr, "contract: allowance no longer needed in this run: %s %q (%s)\n", a.Kind, a.Match, a.Fix)
	}
}

// full says whether the scenarios run in their full length (make faults).
func full() bool { return os.Getenv("HEARTH_FAULTS_FULL") != "" }

// pick returns the short or the full form of a duration or count.
func pick[T any](short, long T) T {
	if full() {
		return long
	}
	return short
}

// rssLimitKB bounds the agent's resident memory in every scenario. The
// goal on a gateway is 30 MB; this bound leaves room for a loaded CI
// machine while still catching a leak or an unbounded queue.
const rssLimitKB = 80 << 10

// Safety limits every scenario configures; the write log is checked
// against them.
const (
	limitDischargeW = 1500
	limitChargeW    = 1500
	simMaxW         = 5000 // the simulator's WChaMax: OutWRte/InWRte are percent of it
)

const agentConfig = `gateway_id: {{.GW}}
data_dir: {{.Dir}}
diag_socket: {{.Dir}}/hearth.sock
assume_clock_synced: true
devices:
{{- range .Devices}}
  - name: {{.Name}}
    transport: tcp
    address: {{.Addr}}
    poll_interval: {{$.Poll}}
    timeout: 300ms
    retries: 1
    max_backoff: 1s
{{- end}}
safety:
  soc_min_pct: 10
  soc_max_pct: 95
  max_charge_w: ` + "1500" + `
  max_discharge_w: ` + "1500" + `
  ramp_w_per_s: 1000000
  revert_timeout: 3s
uplink:
{{- if .Brokers}}
  brokers:
{{- range .Brokers}}
    - {{.}}
{{- end}}
{{- else}}
  broker: {{.Broker}}
{{- end}}
  boot_delay: 0s
{{- if .Window}}
  telemetry_window: {{.Window}}
{{- end}}
{{- if .KeyB64}}
  setpoint_keys:
    ops-1: {{.KeyB64}}
{{- end}}
{{- if or .MaxBytes .CommitInterval}}
buffer:
{{- if .MaxBytes}}
  max_bytes: {{.MaxBytes}}
{{- end}}
{{- if .CommitInterval}}
  commit_interval: {{.CommitInterval}}
{{- end}}
{{- end}}
`

type device struct{ Name, Addr string }

// gateway is one agent under test: its config, its process, and what is
// measured of it from outside.
type gateway struct {
	t       *testing.T
	id      string
	dir     string
	cfgPath string
	env     []string // extra environment, e.g. LD_PRELOAD
	bin     string   // the agent binary; "" means hearthBin

	agent *harness.Agent // nil until the first start
}

type gatewayOpts struct {
	Devices []device
	Broker  string
	// Brokers are the nodes of a cluster, instead of Broker.
	Brokers []string
	// Window is uplink.telemetry_window ("" for the default).
	Window   string
	Poll     string
	PubKey   ed25519.PublicKey
	MaxBytes int64
	// CommitInterval is buffer.commit_interval ("" for the default).
	CommitInterval string
	Dir            string // "" makes a temp dir
}

func newGateway(t *testing.T, id string, o gatewayOpts) *gateway {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	if o.Poll == "" {
		o.Poll = "200ms"
	}
	var b bytes.Buffer
	data := map[string]any{"GW": id, "Dir": dir, "Devices": o.Devices, "Broker": o.Broker, "Brokers": o.Brokers, "Window": o.Window, "Poll": o.Poll, "KeyB64": "", "MaxBytes": o.MaxBytes, "CommitInterval": o.CommitInterval}
	if o.PubKey != nil {
		data["KeyB64"] = base64.StdEncoding.EncodeToString(o.PubKey)
	}
	if err := template.Must(template.New("cfg").Parse(agentConfig)).Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, id: id, dir: dir, cfgPath: filepath.Join(dir, "hearth.yaml")}
	if err := os.WriteFile(g.cfgPath, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// start runs `hearth run`; the previous process must have exited. The
// agent is killed when the test ends, and the end of its log printed if
// the test failed.
func (g *gateway) start() {
	g.t.Helper()
	if g.agent != nil {
		g.agent.Restart()
		return
	}
	bin := g.bin
	if bin == "" {
		bin = hearthBin
	}
	g.agent = harness.StartAgent(g.t, bin, harness.AgentOptions{Config: g.cfgPath, Env: g.env,
		Name: "agent " + g.id, LogTail: 60, SampleRSS: 200 * time.Millisecond})
}

// kill SIGKILLs the agent, if it runs, and waits for it.
func (g *gateway) kill() {
	if g.agent != nil {
		g.agent.Kill()
	}
}

// stop sends SIGTERM and waits up to limit for a clean exit: a non-zero
// exit is an error too.
func (g *gateway) stop(limit time.Duration) error {
	if g.agent == nil {
		return nil
	}
	_, err := g.agent.Stop(limit)
	return err
}

// alive fails the test if the agent process has exited on its own.
func (g *gateway) alive() {
	g.t.Helper()
	if g.agent == nil {
		g.t.Fatalf("agent %s is not running", g.id)
	}
	if err := g.agent.Alive(); err != nil {
		g.t.Fatal(err)
	}
}

// checkRSS fails the test if the agent's resident memory ever passed the
// bound.
func (g *gateway) checkRSS() {
	g.t.Helper()
	var kb int64
	starts := 0
	if g.agent != nil {
		kb, starts = g.agent.PeakRSS(), g.agent.Starts()
	}
	if kb == 0 {
		g.t.Errorf("check RSS: never sampled the agent's VmRSS")
		return
	}
	if kb > rssLimitKB {
		g.t.Errorf("check RSS: agent peaked at %.1f MB, above the %d MB bound", float64(kb)/1024, rssLimitKB>>10)
		return
	}
	g.t.Logf("check RSS: peak %.1f MB over %d process starts (bound %d MB): ok", float64(kb)/1024, starts, rssLimitKB>>10)
}

// diagBuffer asks the running agent's diagnostics API for its buffer report.
func (g *gateway) diagBuffer() (map[string]any, error) {
	var out map[string]any
	if err := g.diagGet("buffer", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// diagGet decodes the running agent's answer to GET /v1/PATH into out.
func (g *gateway) diagGet(path string, out any) error {
	sock := filepath.Join(g.dir, "hearth.sock")
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://hearth/v1/" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s report %q: %w", path, b, err)
	}
	return nil
}

// startSim serves an in-process simulator over Modbus TCP on a loopback
// port, with the scenarios' hardware limits unless cfg sets its own.
func startSim(t *testing.T, cfg sim.Config) (*sim.Simulator, string) {
	t.Helper()
	if cfg.MaxChargeW == 0 {
		cfg.MaxChargeW, cfg.MaxDischargeW = simMaxW, simMaxW
	}
	return harness.StartSim(t, cfg)
}

// observer records everything published under a gateway's prefix, across
// broker restarts (each restart needs a fresh subscription).
type observer struct {
	t    *testing.T
	gw   string
	mu   sync.Mutex
	recs []*harness.Recorder
}

func observe(t *testing.T, brokerURL, gw string) *observer {
	o := &observer{t: t, gw: gw}
	o.resubscribe(brokerURL)
	return o
}

// observeCluster records a gateway's topics on a broker cluster through
// one persistent session that moves between the nodes.
func observeCluster(t *testing.T, urls []string, gw string) *observer {
	o := &observer{t: t, gw: gw}
	r := harness.SubscribeCluster(t, urls, "hearth/v1/"+gw+"/#")
	contract.Watch(t, r)
	o.recs = append(o.recs, r)
	return o
}

func (o *observer) resubscribe(brokerURL string) {
	o.t.Helper()
	r := harness.Subscribe(o.t, brokerURL, "hearth/v1/"+o.gw+"/#")
	contract.Watch(o.t, r)
	o.mu.Lock()
	o.recs = append(o.recs, r)
	o.mu.Unlock()
}

func (o *observer) messages() []harness.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []harness.Message
	for _, r := range o.recs {
		out = append(out, r.Messages()...)
	}
	return out
}

// ledger is what the broker saw of one gateway's data: every reading by
// seq, the seq ranges aggregates and gap events stand for, and events.
type ledger struct {
	readings   map[uint64]hearth.Reading
	aggregates []hearth.Aggregate
	gaps       []seqRange
	events     []map[string]any
	acks       []hearth.Ack
	conflicts  []string // one seq delivered twice with different content
}

type seqRange struct {
	From, To uint64
	Reason   string
}

func (o *observer) ledger() *ledger {
	o.t.Helper()
	l := &ledger{readings: map[uint64]hearth.Reading{}}
	p := "hearth/v1/" + o.gw + "/"
	for _, m := range o.messages() {
		switch m.Topic {
		case p + "telemetry", p + "telemetry/backfill":
			batch, err := uplink.DecodeTelemetry(m.Payload)
			if err != nil {
				o.t.Fatalf("%s does not decode: %v\n%.300q", m.Topic, err, m.Payload)
			}
			for _, r := range batch.Readings {
				if prev, ok := l.readings[r.Seq]; ok && !sameReading(prev, r) {
					l.conflicts = append(l.conflicts, fmt.Sprintf("seq %d: %v vs %v", r.Seq, prev.Time, r.Time))
				}
				l.readings[r.Seq] = r
			}
			l.aggregates = append(l.aggregates, batch.Aggregates...)
		case p + "event":
			var ev map[string]any
			if err := json.Unmarshal(m.Payload, &ev); err != nil {
				o.t.Fatalf("event carried invalid JSON: %v\n%s", err, m.Payload)
			}
			l.events = append(l.events, ev)
			if ev["type"] == "gap" {
				from, _ := ev["from_seq"].(float64)
				to, _ := ev["to_seq"].(float64)
				reason, _ := ev["reason"].(string)
				l.gaps = append(l.gaps, seqRange{uint64(from), uint64(to), reason})
			}
		case p + "setpoint/ack":
			var a hearth.Ack
			if err := json.Unmarshal(m.Payload, &a); err != nil {
				o.t.Fatalf("ack carried invalid JSON: %v\n%s", err, m.Payload)
			}
			l.acks = append(l.acks, a)
		}
	}
	return l
}

// sameReading compares what a redelivery must keep identical. Restamping
// may change ts and clock of an unsynced reading, so those are not compared.
func sameReading(a, b hearth.Reading) bool {
	if a.Device != b.Device || a.Boot != b.Boot || a.MonoMS != b.MonoMS || len(a.Points) != len(b.Points) {
		return false
	}
	for k, p := range a.Points {
		if b.Points[k] != p {
			return false
		}
	}
	return true
}

func (l *ledger) eventsOfType(typ string) []map[string]any {
	var out []map[string]any
	for _, e := range l.events {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// acksOf returns the acks of lease version v, in the order they came.
func (l *ledger) acksOf(v uint64) []hearth.Ack {
	var out []hearth.Ack
	for _, a := range l.acks {
		if a.Version == v {
			out = append(out, a)
		}
	}
	return out
}

// missing returns the seqs in 1..hi that no reading, aggregate range or gap
// event accounts for, as ranges.
func (l *ledger) missing(hi uint64) []seqRange {
	var cover []seqRange
	for s := range l.readings {
		cover = append(cover, seqRange{From: s, To: s})
	}
	for _, a := range l.aggregates {
		cover = append(cover, seqRange{From: a.SeqFrom, To: a.SeqTo})
	}
	cover = append(cover, l.gaps...)
	sort.Slice(cover, func(i, j int) bool { return cover[i].From < cover[j].From })
	var out []seqRange
	next := uint64(1)
	for _, c := range cover {
		if c.From > next {
			out = append(out, seqRange{From: next, To: min(c.From-1, hi)})
		}
		next = max(next, c.To+1)
		if next > hi {
			break
		}
	}
	if next <= hi {
		out = append(out, seqRange{From: next, To: hi})
	}
	return out
}

// highest returns the highest seq the broker saw in any form.
func (l *ledger) highest() uint64 {
	var hi uint64
	for s := range l.readings {
		hi = max(hi, s)
	}
	for _, a := range l.aggregates {
		hi = max(hi, a.SeqTo)
	}
	for _, g := range l.gaps {
		hi = max(hi, g.To)
	}
	return hi
}

// settle waits until the agent reports an empty outbox, then checks that
// every seq up to the agent's last one reached the broker or was reported
// as a gap. The agent keeps running; it is stopped cleanly afterwards.
func settle(t *testing.T, g *gateway, o *observer, within time.Duration) *ledger {
	t.Helper()
	// After an outage the agent's next connect may be as far as the
	// reconnect backoff's 2-minute cap; settle returns as soon as the
	// outbox is empty, so the floor costs nothing when all is well.
	within = max(within, 150*time.Second)
	deadline := time.Now().Add(within)
	var last map[string]any
	var err error
	for {
		g.alive()
		last, err = g.diagBuffer()
		if err == nil && last["pending_readings"] == 0.0 && last["pending_aggregates"] == 0.0 && last["pending_events"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check drain: the agent's outbox did not empty within %s: %v (err %v)", within, last, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The broker hands messages on after its PUBACK; give the last ones a
	// moment to reach the observer, then stop the agent cleanly.
	time.Sleep(time.Second)
	if err := g.stop(10 * time.Second); err != nil {
		t.Errorf("clean stop: %v", err)
	}
	l := o.ledger()
	// What the stopped agent still holds is not lost: open its buffer as
	// the next run would and count what is pending there (readings,
	// minutes, gap events) alongside what the broker saw.
	st, err := buffer.Open(filepath.Join(g.dir, "hearth.db"), buffer.Options{})
	if err != nil {
		t.Fatalf("open the stopped agent's buffer: %v", err)
	}
	defer st.Close()
	stats, err := st.Stats()
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for after := uint64(0); ; {
		rs, err := st.PendingAfter(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			break
		}
		for _, r := range rs {
			if _, ok := l.readings[r.Seq]; !ok {
				l.readings[r.Seq] = r
				held++
			}
			after = r.Seq
		}
	}
	aggs, err := st.PendingAggregates(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	l.aggregates = append(l.aggregates, aggs...)
	evs, err := st.PendingEvents(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type != "gap" {
			continue
		}
		var gp struct {
			From   uint64 `json:"from_seq"`
			To     uint64 `json:"to_seq"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(e.Data, &gp) == nil {
			l.gaps = append(l.gaps, seqRange{gp.From, gp.To, gp.Reason})
			held++
		}
	}
	if held > 0 {
		t.Logf("the stopped agent's buffer still holds %d readings or gap events, %d minutes: counted as held, not lost", held, len(aggs))
	}
	checkSeqs(t, l, stats.LastSeq)
	return l
}

// checkSeqs asserts the no-loss invariant over 1..lastSeq.
func checkSeqs(t *testing.T, l *ledger, lastSeq uint64) {
	t.Helper()
	if lastSeq == 0 {
		t.Fatalf("check seqs: the agent assigned no seq at all")
	}
	if miss := l.missing(lastSeq); len(miss) > 0 {
		n := uint64(0)
		for _, m := range miss {
			n += m.To - m.From + 1
		}
		shown := miss[:min(len(miss), 10)]
		t.Errorf("check seqs: %d of seqs 1..%d neither arrived nor were reported in a gap event: %v", n, lastSeq, shown)
	} else {
		var gapped uint64
		for _, g := range l.gaps {
			gapped += g.To - g.From + 1
		}
		var agg uint64
		for _, a := range l.aggregates {
			agg += uint64(a.N)
		}
		t.Logf("check seqs: all of 1..%d accounted for: %d readings, %d in %d aggregates, %d in %d gap events: ok",
			lastSeq, len(l.readings), agg, len(l.aggregates), gapped, len(l.gaps))
	}
	if hi := l.highest(); hi > lastSeq {
		t.Errorf("check seqs: broker saw seq %d, beyond the agent's last seq %d", hi, lastSeq)
	}
	if len(l.conflicts) > 0 {
		t.Errorf("check seqs: %d seqs arrived twice with different content, e.g. %s", len(l.conflicts), l.conflicts[0])
	}
}

// checkLimits asserts that no write the simulator accepted commanded more
// than the configured charge or discharge limit, and returns how many
// rate writes it looked at.
func checkLimits(t *testing.T, s *sim.Simulator) int {
	t.Helper()
	out, _ := s.PointAddr(124, "OutWRte")
	in, _ := s.PointAddr(124, "InWRte")
	wmax, _ := s.PointAddr(124, "WChaMax")
	n, bad := 0, 0
	// OutWRte and InWRte are percent of WChaMax at InOutWRte_SF -2.
	watts := func(raw uint16) float64 { return float64(int16(raw)) / 100 / 100 * simMaxW }
	for _, w := range s.Writes() {
		if w.Exception != 0 {
			continue
		}
		for i, v := range w.Values {
			addr := w.Addr + uint16(i)
			var got, limit float64
			var what string
			switch addr {
			case out:
				got, limit, what = watts(v), limitDischargeW, "OutWRte (discharge)"
			case in:
				got, limit, what = watts(v), limitChargeW, "InWRte (charge)"
			case wmax:
				bad++
				t.Errorf("check limits: WChaMax written (%d): the rate reference moved, the limit check cannot hold", v)
				continue
			default:
				continue
			}
			n++
			if got > limit+1 || got < -limit-1 {
				bad++
				if bad <= 5 {
					t.Errorf("check limits: %s written as %.0f W at %s, beyond the %d W limit", what, got, w.Time.Format(time.StampMilli), int(limit))
				}
			}
		}
	}
	if bad == 0 {
		t.Logf("check limits: %d rate writes in the simulator's log, none beyond ±%d W: ok", n, limitDischargeW)
	}
	return n
}

// powerLease returns a signed-or-plain setpoint lease payload for gateway gw.
func powerLease(gw, id string, version uint64, w float64, valid time.Duration, key ed25519.PrivateKey) []byte {
	now := time.Now().UTC()
	p := map[string]any{"id": id, "version": version, "gateway": gw, "issued_at": now.Format(time.RFC3339Nano),
		"valid_until": now.Add(valid).Format(time.RFC3339Nano), "mode": "power", "power_w": w, "fallback": "auto"}
	b, _ := json.Marshal(p)
	if key == nil {
		return b
	}
	env, err := uplink.SignSetpoint(b, "ops-1", key)
	if err != nil {
		panic(err)
	}
	return env
}

// step logs what a scenario does, so its output reads as a transcript.
func step(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("do: "+format, args...)
}
