package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/internal/schemacheck"
)

const wait = 10 * time.Second

// syncBuffer collects a session's log, printed when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSession starts a session to broker with fast test timings; mod
// adjusts the config and setup runs before Start. The session is closed
// when the test ends.
func startSession(t *testing.T, broker, gw string, mod func(*Config), setup ...func(*Session)) *Session {
	t.Helper()
	var logs syncBuffer
	cfg := Config{
		Broker:         broker,
		GatewayID:      gw,
		BackoffMin:     20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
		PublishTimeout: 5 * time.Second,
		ConnectTimeout: 5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range setup {
		f(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), wait)
		defer ccancel()
		if err := s.Close(cctx); err != nil {
			t.Logf("Close: %v", err)
		}
		cancel()
		if t.Failed() {
			t.Logf("session log:\n%s", logs.String())
		}
	})
	return s
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitConnected(t *testing.T, s *Session) {
	t.Helper()
	waitUntil(t, "session connected", s.Connected)
}

func reading(seq uint64) hearth.Reading {
	return hearth.Reading{
		Seq: seq, Device: "battery", Time: time.Date(2026, 11, 25, 10, 0, 1, 123e6, time.UTC),
		Clock: hearth.ClockSynced, Boot: "9f2c", MonoMS: 1234567,
		Points: map[string]hearth.Point{"soc_pct": hearth.V(72.5), "temp_c": hearth.Q(hearth.QualityCommError)},
	}
}

type status struct {
	State   string         `json:"state"`
	Gateway string         `json:"gateway"`
	Version string         `json:"version"`
	TS      *time.Time     `json:"ts"`
	Reason  string         `json:"reason"`
	Profile string         `json:"profile"`
	Devices []DeviceInfo   `json:"devices"`
	Limits  map[string]any `json:"limits"`
}

func decodeStatus(t *testing.T, m harness.Message) status {
	t.Helper()
	var st status
	if err := json.Unmarshal(m.Payload, &st); err != nil {
		t.Fatalf("status payload %s: %v", m.Payload, err)
	}
	return st
}

// lastStatus returns the last message on topic.
func lastStatus(msgs []harness.Message, topic string) (harness.Message, bool) {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Topic == topic {
			return msgs[i], true
		}
	}
	return harness.Message{}, false
}

func stateIs(t *testing.T, topic, state string) func([]harness.Message) bool {
	return func(msgs []harness.Message) bool {
		m, ok := lastStatus(msgs, topic)
		if !ok {
			return false
		}
		var st status
		return json.Unmarshal(m.Payload, &st) == nil && st.State == state
	}
}

func TestTelemetryTopicAndJSON(t *testing.T) {
	t.Parallel()
	for _, format := range []string{FormatLean, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			testTelemetryTopic(t, format)
		})
	}
}

func testTelemetryTopic(t *testing.T, format string) {
	m := harness.StartMosquitto(t)
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-tel/telemetry/#")
	s := startSession(t, m.URL(), "gw-tel", func(c *Config) { c.TelemetryFormat = format })
	waitConnected(t, s)
	ctx := context.Background()

	live := []hearth.Reading{reading(1), reading(2)}
	if _, err := s.PublishTelemetry(ctx, live, false); err != nil {
		t.Fatalf("PublishTelemetry live: %v", err)
	}
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(0)}, true); err != nil {
		t.Fatalf("PublishTelemetry backfill: %v", err)
	}
	msgs := rec.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) == 2 })

	wantTopics := []string{"hearth/v1/gw-tel/telemetry", "hearth/v1/gw-tel/telemetry/backfill"}
	wantSeqs := [][]uint64{{1, 2}, {0}}
	for i, msg := range msgs {
		if msg.Topic != wantTopics[i] || msg.Retained || msg.QoS != 1 {
			t.Errorf("message %d: topic %s retained %t qos %d, want %s, not retained, qos 1", i, msg.Topic, msg.Retained, msg.QoS, wantTopics[i])
		}
		body, err := DecodeTelemetry(msg.Payload)
		if err != nil {
			t.Fatalf("message %d payload %q: %v", i, msg.Payload, err)
		}
		mustValidate(t, "telemetry", msg.Payload)
		if len(body.Readings) != len(wantSeqs[i]) {
			t.Fatalf("message %d: %d readings, want %d", i, len(body.Readings), len(wantSeqs[i]))
		}
		for j, r := range body.Readings {
			want := reading(wantSeqs[i][j])
			if r.Seq != want.Seq || !r.Time.Equal(want.Time) || r.Points["soc_pct"] != want.Points["soc_pct"] ||
				r.Points["temp_c"] != want.Points["temp_c"] || r.Clock != hearth.ClockSynced {
				t.Errorf("message %d reading %d = %+v, want %+v", i, j, r, want)
			}
		}
	}
	// The raw document uses the contract's field names.
	want := `"points":{"soc_pct":{"v":72.5},"temp_c":{"q":"comm_error"}}`
	if format == FormatLean {
		want = `"dev":[["battery",["soc_pct","temp_c"]]],"rows":[[0,0,0,0,1,[72.5,"comm_error"]],[1,0,0,0,1,[72.5,"comm_error"]]]}`
	}
	if doc, _, _ := schemacheck.Telemetry(msgs[0].Payload); !bytes.Contains(doc, []byte(want)) {
		t.Errorf("payload %s lacks the contract's encoding %s", doc, want)
	}
	if st := s.Stats(); st.Published < 3 { // birth + 2 telemetry
		t.Errorf("Stats().Published = %d, want ≥ 3", st.Published)
	}
}

func TestStatusOnlineRetainedAndWillOnCut(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	proxy := harness.StartProxy(t, m.Addr())
	topic := "hearth/v1/gw-lwt/status"
	// The birth is set before Start: the Will is fixed when a connection
	// is made, so its version is the one known then.
	s := startSession(t, proxy.URL(), "gw-lwt", nil, func(s *Session) {
		if err := s.SetBirth(Birth{
			Version: "1.2.3", Profile: "sunspec-generic",
			Devices: []DeviceInfo{{Name: "battery", Manufacturer: "Acme", Model: "B10", Serial: "S1", Firmware: "4.2"}},
			Limits:  map[string]any{"soc_min_pct": 10},
		}); err != nil {
			t.Fatal(err)
		}
	})
	waitConnected(t, s)

	// A subscriber arriving after the birth gets it as a retained message.
	rec := harness.Subscribe(t, m.URL(), topic)
	onlineMsgs := rec.WaitFor(t, wait, stateIs(t, topic, "online"))
	on, _ := lastStatus(onlineMsgs, topic)
	st := decodeStatus(t, on)
	if !on.Retained {
		t.Error("online status not retained")
	}
	if st.Gateway != "gw-lwt" || st.Version != "1.2.3" || st.Profile != "sunspec-generic" || st.TS == nil ||
		len(st.Devices) != 1 || st.Devices[0].Serial != "S1" || st.Limits["soc_min_pct"] != float64(10) {
		t.Errorf("online status = %s", on.Payload)
	}

	// Cut the TCP connection under the client, keeping it from coming
	// back: the broker publishes the Will, and it stays retained.
	proxy.Refuse(true)
	if n := proxy.Cut(); n != 1 {
		t.Fatalf("proxy cut %d connections, want 1", n)
	}
	rec.WaitFor(t, wait, stateIs(t, topic, "offline"))
	late := harness.Subscribe(t, m.URL(), topic)
	msgs := late.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= 1 })
	off := decodeStatus(t, msgs[0])
	if !msgs[0].Retained || off.State != "offline" || off.Reason != "connection_lost" || off.Gateway != "gw-lwt" || off.Version != "1.2.3" {
		t.Errorf("retained status after cut = %s (retained %t), want the offline Will", msgs[0].Payload, msgs[0].Retained)
	}
	waitUntil(t, "session notices the cut", func() bool { return !s.Connected() })

	// Once the link is back the session reconnects and is online again.
	proxy.Refuse(false)
	rec.WaitFor(t, wait, stateIs(t, topic, "online"))
	waitUntil(t, "reconnect after cut", func() bool { st := s.Stats(); return st.Connects >= 2 && st.Connected })
	if st := s.Stats(); st.Disconnects < 1 || st.LastError == "" {
		t.Errorf("Stats after cut = %+v, want a disconnect with its error", st)
	}
}

func TestCloseLeavesRetainedOffline(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	s := startSession(t, m.URL(), "gw-close", nil)
	waitConnected(t, s)
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-close/status")
	rec.WaitFor(t, wait, stateIs(t, "hearth/v1/gw-close/status", "online"))

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.Connected() {
		t.Error("Connected() after Close")
	}
	late := harness.Subscribe(t, m.URL(), "hearth/v1/gw-close/status")
	msgs := late.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= 1 })
	st := decodeStatus(t, msgs[0])
	if !msgs[0].Retained || st.State != "offline" || st.Reason != "shutdown" || st.TS == nil {
		t.Errorf("retained status after Close = %s (retained %t), want offline/shutdown", msgs[0].Payload, msgs[0].Retained)
	}
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1)}, false); !errors.Is(err, ErrClosed) {
		t.Errorf("PublishTelemetry after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestPublishFailsWhileBrokerDownAndRecovers(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	s := startSession(t, m.URL(), "gw-down", nil)
	waitConnected(t, s)
	ctx := context.Background()
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1)}, false); err != nil {
		t.Fatalf("PublishTelemetry before outage: %v", err)
	}

	m.Stop()
	waitUntil(t, "session notices broker down", func() bool { return !s.Connected() })
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(2)}, false); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("PublishTelemetry with broker down = %v, want ErrNotConnected", err)
	}
	before := s.Stats().Attempts
	waitUntil(t, "reconnect attempts while down", func() bool { return s.Stats().Attempts >= before+2 })

	m.Start()
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-down/#")
	waitConnected(t, s)
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(2)}, false); err != nil {
		t.Fatalf("PublishTelemetry after restart: %v", err)
	}
	rec.WaitFor(t, wait, func(msgs []harness.Message) bool {
		for _, m := range msgs {
			if m.Topic == "hearth/v1/gw-down/telemetry" && slices.Contains(seqsOf(t, m.Payload), 2) {
				return true
			}
		}
		return false
	})
	// The birth is republished on the new connection (the broker lost it).
	rec.WaitFor(t, wait, stateIs(t, "hearth/v1/gw-down/status", "online"))
	st := s.Stats()
	if st.Connects != 2 || st.Disconnects != 1 || st.NotConnected != 1 {
		t.Errorf("Stats = %+v, want 2 connects, 1 disconnect, 1 refused publish", st)
	}
}

// A publish whose PUBACK cannot arrive must fail: with a timeout while the
// link is silent, and with ErrNotDelivered when the connection is cut
// while it waits.
func TestPublishNeedsPubackOnSameConnection(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	proxy := harness.StartProxy(t, m.Addr())
	s := startSession(t, proxy.URL(), "gw-ack", func(c *Config) {
		c.PublishTimeout = time.Second
		c.KeepAlive = time.Hour // no pings: only the test decides when the link dies
	})
	waitConnected(t, s)
	// The birth goes out after the connection is up: wait for its PUBACK,
	// or the silent link times it out too and the count below is 2.
	waitUntil(t, "birth acknowledged", func() bool { return s.Stats().Published >= 1 })
	ctx := context.Background()

	proxy.Blackhole(true)
	_, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1)}, false)
	if !errors.Is(err, ErrPubackTimeout) {
		t.Fatalf("publish over a silent link = %v, want ErrPubackTimeout", err)
	}
	if st := s.Stats(); st.PubackTimeouts != 1 {
		t.Errorf("Stats().PubackTimeouts = %d, want 1", st.PubackTimeouts)
	}

	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Publish(cctx, "event", []byte(`{"type":"test"}`), false) }()
	time.Sleep(100 * time.Millisecond)
	proxy.Cut()
	proxy.Blackhole(false)
	if err := <-done; !errors.Is(err, ErrNotDelivered) {
		t.Fatalf("publish cut mid-flight = %v, want ErrNotDelivered", err)
	}
	waitUntil(t, "reconnect", func() bool { return s.Stats().Connects >= 2 && s.Connected() })
	if err := s.Publish(ctx, "event", []byte(`{"type":"after"}`), false); err != nil {
		t.Fatalf("publish after reconnect: %v", err)
	}
}

func TestSetpointReachesHandler(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	got := make(chan []byte, 4)
	s := startSession(t, m.URL(), "gw-sp", nil)
	s.OnSetpoint(func(p []byte) { got <- p })
	waitConnected(t, s)

	want := []byte(`{"id":"b7e1","version":42,"mode":"power","power_w":-3000}`)
	harness.Publish(t, m.URL(), "hearth/v1/gw-sp/setpoint", want, false)
	harness.Publish(t, m.URL(), "hearth/v1/other-gw/setpoint", []byte(`{"id":"not-mine"}`), false)
	select {
	case p := <-got:
		if !bytes.Equal(p, want) {
			t.Fatalf("handler got %s, want %s", p, want)
		}
	case <-time.After(wait):
		t.Fatal("setpoint never reached the handler")
	}
	select {
	case p := <-got:
		t.Fatalf("handler got a second payload %s (another gateway's?)", p)
	case <-time.After(200 * time.Millisecond):
	}
	if st := s.Stats(); st.SetpointsReceived != 1 || st.SetpointsDropped != 0 {
		t.Errorf("Stats = %+v, want 1 received 0 dropped", st)
	}
}

func TestBlockedHandlerDoesNotStallPublishing(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := startSession(t, m.URL(), "gw-block", func(c *Config) { c.SetpointQueue = 2 })
	s.OnSetpoint(func([]byte) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	waitConnected(t, s)

	const n = 10
	for i := range n {
		harness.Publish(t, m.URL(), "hearth/v1/gw-block/setpoint", fmt.Appendf(nil, `{"version":%d}`, i), false)
	}
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("handler never called")
	}
	waitUntil(t, "all setpoints received or dropped", func() bool {
		st := s.Stats()
		return st.SetpointsReceived+st.SetpointsDropped == n
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1)}, false); err != nil {
		t.Fatalf("PublishTelemetry with a blocked setpoint handler: %v", err)
	}
	if err := s.Publish(ctx, "setpoint/ack", []byte(`{"result":"applied"}`), false); err != nil {
		t.Fatalf("Publish ack with a blocked setpoint handler: %v", err)
	}
	// One in the handler, two queued, the rest dropped and counted.
	if st := s.Stats(); st.SetpointsReceived != 3 || st.SetpointsDropped != n-3 {
		t.Errorf("Stats: received %d dropped %d, want 3 and %d", st.SetpointsReceived, st.SetpointsDropped, n-3)
	}
	close(release)
}

func TestPublishValidation(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", GatewayID: "gw", MaxPayload: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, sub := range []string{"", "a/+", "#", "/event", "event/", "a//b", "status", "setpoint"} {
		if err := s.Publish(ctx, sub, []byte("{}"), false); err == nil || errors.Is(err, ErrNotConnected) {
			t.Errorf("Publish(%q) = %v, want a subtopic error", sub, err)
		}
	}
	if err := s.Publish(ctx, "event", make([]byte, 11), false); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("Publish 11 bytes with MaxPayload 10 = %v, want ErrPayloadTooLarge", err)
	}
	if err := s.Publish(ctx, "event", []byte("{}"), false); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish before Start = %v, want ErrNotConnected", err)
	}
	if _, err := s.PublishTelemetry(ctx, nil, false); err == nil {
		t.Error("PublishTelemetry(nil) = nil, want an error")
	}
	if err := s.SetBirth(Birth{Limits: map[string]any{"bad": make(chan int)}}); err == nil {
		t.Error("SetBirth with unencodable limits = nil, want an error")
	}
}

func TestSetBirthWhileConnectedRepublishes(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	s := startSession(t, m.URL(), "gw-rebirth", nil)
	waitConnected(t, s)
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-rebirth/status")
	rec.WaitFor(t, wait, stateIs(t, "hearth/v1/gw-rebirth/status", "online"))
	if err := s.SetBirth(Birth{Profile: "p2"}); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, wait, func(msgs []harness.Message) bool {
		m, ok := lastStatus(msgs, "hearth/v1/gw-rebirth/status")
		return ok && bytes.Contains(m.Payload, []byte(`"profile":"p2"`))
	})
}

func TestBrokerDownFromBootKeepsRetrying(t *testing.T) {
	t.Parallel()
	port := harness.FreePort(t) // nothing listens here
	s := startSession(t, fmt.Sprintf("tcp://127.0.0.1:%d", port), "gw-boot", nil)
	waitUntil(t, "several attempts", func() bool { return s.Stats().Attempts >= 3 })
	st := s.Stats()
	if st.Connected || st.Connects != 0 || st.LastError == "" {
		t.Errorf("Stats = %+v, want not connected, 0 connects, a last error", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close while retrying = %v", err)
	}
}

func TestTLSClientCertificate(t *testing.T) {
	t.Parallel()
	certs := harness.GenerateCerts(t)
	m := harness.StartMosquitto(t, harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, true))

	t.Run("with client cert", func(t *testing.T) {
		t.Parallel()
		s := startSession(t, m.URL(), "gw-tls", func(c *Config) {
			c.CAFile, c.CertFile, c.KeyFile = certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile
		})
		waitConnected(t, s)
		if _, err := s.PublishTelemetry(context.Background(), []hearth.Reading{reading(1)}, false); err != nil {
			t.Fatalf("PublishTelemetry over TLS: %v", err)
		}
	})
	t.Run("without client cert", func(t *testing.T) {
		t.Parallel()
		s := startSession(t, m.URL(), "gw-nocert", func(c *Config) { c.CAFile = certs.CAFile })
		waitUntil(t, "several attempts", func() bool { return s.Stats().Attempts >= 3 })
		st := s.Stats()
		t.Logf("last error without client cert: %s", st.LastError)
		if st.Connects != 0 || st.Connected || st.LastError == "" {
			t.Errorf("Stats = %+v, want no connection and an error", st)
		}
	})
	t.Run("untrusted server", func(t *testing.T) {
		t.Parallel()
		other := harness.GenerateCerts(t)
		s := startSession(t, m.URL(), "gw-wrongca", func(c *Config) {
			c.CAFile, c.CertFile, c.KeyFile = other.CAFile, other.ClientCertFile, other.ClientKeyFile
		})
		waitUntil(t, "several attempts", func() bool { return s.Stats().Attempts >= 3 })
		st := s.Stats()
		if st.Connects != 0 || !bytes.Contains([]byte(st.LastError), []byte("certificate")) {
			t.Errorf("Stats = %+v, want no connection and a certificate error", st)
		}
	})
}

func TestCancelledStartContextLeavesCleanly(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	s, err := New(Config{Broker: m.URL(), GatewayID: "gw-cancel", BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	waitConnected(t, s)
	cancel()
	waitUntil(t, "disconnect after cancel", func() bool { return !s.Connected() })
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-cancel/status")
	msgs := rec.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= 1 })
	if st := decodeStatus(t, msgs[0]); st.State != "offline" || st.Reason != "shutdown" {
		t.Errorf("retained status after cancel = %s, want offline/shutdown", msgs[0].Payload)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), wait)
	defer ccancel()
	if err := s.Close(cctx); err != nil {
		t.Errorf("Close after cancel = %v", err)
	}
}

// seqsOf returns the seqs of the readings a telemetry payload carries.
func seqsOf(t *testing.T, payload []byte) []uint64 {
	t.Helper()
	tel, err := DecodeTelemetry(payload)
	if err != nil {
		t.Fatalf("telemetry payload %q: %v", payload, err)
	}
	var seqs []uint64
	for _, r := range tel.Readings {
		seqs = append(seqs, r.Seq)
	}
	return seqs
}
