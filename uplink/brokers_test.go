package uplink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/broker"
	"github.com/hearth-energy/hearth/internal/harness"
)

// brokerUnderTest starts one MQTT 3.1.1 broker for a test and returns its
// host:port.
type brokerUnderTest struct {
	name  string
	start func(t *testing.T) string
}

var brokers = []brokerUnderTest{
	{"mosquitto", func(t *testing.T) string { return harness.StartMosquitto(t).Addr() }},
	{"mochi", func(t *testing.T) string {
		b, err := broker.Start(context.Background(), "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b.Addr()
	}},
	{"nats", func(t *testing.T) string { return harness.StartNATS(t).Addr() }},
	{"rabbitmq", func(t *testing.T) string {
		if os.Getenv("HEARTH_RABBITMQ") == "" {
			t.Skip("a RabbitMQ node boots in 20-60 s: `make rabbitmq` (run by .ci/run) runs these checks against one")
		}
		return harness.StartRabbitMQ(t).Addr()
	}},
}

// submitter records the leases handed to safety and acks them applied.
type submitter struct {
	mu  sync.Mutex
	got []hearth.Setpoint
	at  []time.Time
}

func (s *submitter) submit(sp hearth.Setpoint, received time.Time) hearth.Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, sp)
	s.at = append(s.at, received)
	return hearth.Ack{ID: sp.ID, Version: sp.Version, Result: hearth.ResultApplied, AppliedW: sp.PowerW}
}

func (s *submitter) leases() []hearth.Setpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hearth.Setpoint(nil), s.got...)
}

func acks(t *testing.T, msgs []harness.Message, topic string) []hearth.Ack {
	t.Helper()
	var out []hearth.Ack
	for _, m := range msgs {
		if m.Topic != topic {
			continue
		}
		var a hearth.Ack
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			t.Fatalf("ack %s: %v", m.Payload, err)
		}
		out = append(out, a)
	}
	return out
}

// TestSessionContract runs the session's contract against every broker:
// birth retained, telemetry, events, state and acks delivered with QoS 1,
// signed setpoints applied and others refused, the Will on a cut, and a
// setpoint published while the gateway was cut off delivered after the
// reconnect through the same checks.
func TestSessionContract(t *testing.T) {
	t.Parallel()
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			addr := b.start(t)
			url := "tcp://" + addr
			proxy := harness.StartProxy(t, addr)
			gw := "gw-" + b.name
			base := "hearth/v1/" + gw
			rec := harness.Subscribe(t, url, base+"/#")
			key := newKey(t, "ops-1")
			var sub submitter
			s := startSession(t, proxy.URL(), gw, nil, func(s *Session) {
				s.HandleSetpoints(map[string]ed25519.PublicKey{key.id: key.pub}, nil, sub.submit)
			})
			waitConnected(t, s)
			ctx := context.Background()

			// Birth: retained, seen by a late subscriber.
			rec.WaitFor(t, wait, stateIs(t, base+"/status", "online"))
			late := harness.Subscribe(t, url, base+"/status")
			if m := late.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= 1 })[0]; !m.Retained {
				t.Errorf("status to a late subscriber not retained: %v", m)
			}

			// Up: telemetry, event, state.
			if n, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1), reading(2)}, false); err != nil || n != 2 {
				t.Fatalf("PublishTelemetry = %d, %v", n, err)
			}
			if err := s.PublishEvent(ctx, hearth.Event{ID: 9, Type: "gap", Data: json.RawMessage(`{"from_seq":1,"to_seq":2,"reason":"quota"}`)}); err != nil {
				t.Fatalf("PublishEvent: %v", err)
			}
			if err := s.PublishState(ctx, hearth.State{Mode: hearth.ModeAuto, Safety: "ok"}); err != nil {
				t.Fatalf("PublishState: %v", err)
			}
			rec.WaitFor(t, wait, func(m []harness.Message) bool {
				return count(m, base+"/telemetry") == 1 && count(m, base+"/event") == 1 && count(m, base+"/state") == 1
			})
			lateState := harness.Subscribe(t, url, base+"/state")
			if m := lateState.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= 1 })[0]; !m.Retained || !bytes.Contains(m.Payload, []byte(`"mode":"auto"`)) {
				t.Errorf("state to a late subscriber = %v, want the retained state", m)
			}

			// Down: a signed lease is applied; an unsigned one refused.
			harness.Publish(t, url, base+"/setpoint", sign(t, forGW(t, gw), key), false)
			harness.Publish(t, url, base+"/setpoint", forGW(t, gw), false)
			msgs := rec.WaitFor(t, wait, func(m []harness.Message) bool { return count(m, base+"/setpoint/ack") >= 2 })
			got := acks(t, msgs, base+"/setpoint/ack")
			// Two publishers' messages have no order between them: the
			// broker may deliver the unsigned lease first.
			if got[0].Result != hearth.ResultApplied {
				got[0], got[1] = got[1], got[0]
			}
			if got[0].Result != hearth.ResultApplied || got[0].ID != "b7e1" || got[0].Version != 42 || got[0].AppliedW == nil || *got[0].AppliedW != -3000 {
				t.Errorf("ack of the signed lease = %+v, want applied -3000 W", got[0])
			}
			if got[1].Result != hearth.ResultRejected || got[1].Reason != hearth.ReasonUnsigned || got[1].ID != "b7e1" {
				t.Errorf("ack of the unsigned lease = %+v, want rejected/unsigned", got[1])
			}
			if n := len(sub.leases()); n != 1 {
				t.Fatalf("%d leases reached safety, want 1", n)
			}

			// Cut the link and keep it down: the Will says offline.
			proxy.Refuse(true)
			proxy.Cut()
			rec.WaitFor(t, wait, stateIs(t, base+"/status", "offline"))
			waitUntil(t, "session notices the cut", func() bool { return !s.Connected() })

			// A lease sent while the gateway is away waits in its session
			// and is delivered, checked and acked after the reconnect.
			second := lease(t, map[string]any{"version": 43, "power_w": 1000, "gateway": gw})
			harness.Publish(t, url, base+"/setpoint", sign(t, second, key), false)
			cutOver := time.Now()
			proxy.Refuse(false)
			// (The unsigned lease's ack may come twice: at least once.)
			msgs = rec.WaitFor(t, wait, func(m []harness.Message) bool {
				for _, a := range acks(t, m, base+"/setpoint/ack") {
					if a.Version == 43 {
						return true
					}
				}
				return false
			})
			got = acks(t, msgs, base+"/setpoint/ack")
			if a := got[len(got)-1]; a.Result != hearth.ResultApplied || a.Version != 43 {
				t.Errorf("ack of the queued lease = %+v, want applied version 43", a)
			}
			leases := sub.leases()
			if len(leases) != 2 || leases[1].Version != 43 || *leases[1].PowerW != 1000 {
				t.Fatalf("leases reaching safety = %+v, want the queued version 43 second", leases)
			}
			sub.mu.Lock()
			received := sub.at[1]
			sub.mu.Unlock()
			if received.Before(cutOver) {
				t.Errorf("queued lease stamped received at %v, before the link came back at %v", received, cutOver)
			}
			rec.WaitFor(t, wait, stateIs(t, base+"/status", "online"))
		})
	}
}

// TestTelemetrySplitsToMaxPayload checks that no message exceeds
// MaxPayload, that every reading arrives once and in order, and that a
// reading that cannot fit is reported with how many went before it.
func TestTelemetrySplitsToMaxPayload(t *testing.T) {
	t.Parallel()
	for _, format := range []string{FormatLean, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			testTelemetrySplits(t, format)
		})
	}
}

func testTelemetrySplits(t *testing.T, format string) {
	m := harness.StartMosquitto(t)
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-split/telemetry/#")
	const max = 1000
	s := startSession(t, m.URL(), "gw-split", func(c *Config) { c.MaxPayload = max; c.MaxInflight = 3; c.TelemetryFormat = format })
	waitConnected(t, s)
	ctx := context.Background()

	// Values that differ reading to reading, so compression cannot fold
	// them all into one message.
	var rs []hearth.Reading
	for i := range 40 {
		r := reading(uint64(100 + i))
		r.Points = map[string]hearth.Point{"soc_pct": hearth.V(72.5 + float64(i)*0.013), "temp_c": hearth.Q(hearth.QualityCommError)}
		for j := range 12 {
			r.Points[fmt.Sprintf("p%02d", j)] = hearth.V(float64(i*7919+j*104729) / 977)
		}
		rs = append(rs, r)
	}
	n, err := s.PublishTelemetry(ctx, rs, true)
	if err != nil || n != len(rs) {
		t.Fatalf("PublishTelemetry(40 readings) = %d, %v; want 40, nil", n, err)
	}
	var seqs []uint64
	msgs := rec.WaitFor(t, wait, func(msgs []harness.Message) bool {
		total := 0
		for _, m := range msgs {
			total += len(seqsOf(t, m.Payload))
		}
		return total >= len(rs)
	})
	for _, msg := range msgs {
		if len(msg.Payload) > max {
			t.Errorf("message of %d bytes, MaxPayload %d", len(msg.Payload), max)
		}
		if msg.Topic != "hearth/v1/gw-split/telemetry/backfill" {
			t.Errorf("topic %s, want backfill", msg.Topic)
		}
		mustValidate(t, "telemetry", msg.Payload)
		seqs = append(seqs, seqsOf(t, msg.Payload)...)
	}
	if len(msgs) < 2 {
		t.Errorf("40 readings in %d message(s) of ≤ %d bytes: not split", len(msgs), max)
	}
	for i, seq := range seqs {
		if seq != uint64(100+i) {
			t.Fatalf("seqs arrived as %v, want 100..139 in order", seqs)
		}
	}
	if len(seqs) != len(rs) {
		t.Errorf("%d readings arrived, want %d", len(seqs), len(rs))
	}

	// A reading that can never fit: the ones before it go, and n says so.
	big := reading(500)
	noise := make([]byte, max)
	rand.Read(noise)
	big.Device = hex.EncodeToString(noise) // incompressible
	n, err = s.PublishTelemetry(ctx, []hearth.Reading{reading(498), reading(499), big, reading(501)}, false)
	if !errors.Is(err, ErrPayloadTooLarge) || n != 2 {
		t.Errorf("PublishTelemetry with an oversized reading = %d, %v; want 2, ErrPayloadTooLarge", n, err)
	}
}

// TestTelemetryPartialDeliveryOnCut checks that when the link dies in the
// middle of a split batch, n counts only readings whose PUBACK came.
func TestTelemetryPartialDeliveryOnCut(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	proxy := harness.StartProxy(t, m.Addr())
	s := startSession(t, proxy.URL(), "gw-partial", func(c *Config) {
		c.MaxPayload = 600
		c.PublishTimeout = time.Second
		c.KeepAlive = time.Hour
	})
	waitConnected(t, s)
	proxy.Blackhole(true)
	var rs []hearth.Reading
	for i := range 20 {
		rs = append(rs, reading(uint64(i)))
	}
	n, err := s.PublishTelemetry(context.Background(), rs, false)
	if err == nil || n != 0 {
		t.Fatalf("PublishTelemetry over a dead link = %d, %v; want 0 and an error", n, err)
	}
}

// TestHostileSetpointsThroughBroker sends the hostile inputs as a cloud
// would, through Mosquitto, and checks each gets its documented ack and
// none reaches safety.
func TestHostileSetpointsThroughBroker(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	base := "hearth/v1/" + testGW
	rec := harness.Subscribe(t, m.URL(), base+"/setpoint/ack")
	key, rogue := newKey(t, "ops-1"), newKey(t, "rogue")
	var sub submitter
	s := startSession(t, m.URL(), testGW, func(c *Config) { c.SetpointQueue = 64 }, func(s *Session) {
		s.HandleSetpoints(map[string]ed25519.PublicKey{key.id: key.pub}, nil, sub.submit)
	})
	waitConnected(t, s)

	var env Envelope
	json.Unmarshal(sign(t, []byte(goodLease), key), &env)
	env.Payload = lease(t, map[string]any{"power_w": 9000})
	otherBytes, _ := json.Marshal(env)

	inputs := []struct {
		payload []byte
		reason  hearth.Reason
	}{
		{[]byte(`{"id":`), hearth.ReasonBadJSON},
		{sign(t, lease(t, map[string]any{"force": 1}), key), hearth.ReasonUnknownField},
		{bytes.Repeat([]byte("x"), 1<<20), hearth.ReasonTooLarge},
		{sign(t, raw("power_w", `"NaN"`), key), hearth.ReasonBadValue},
		{sign(t, raw("power_w", "Infinity"), key), hearth.ReasonBadJSON},
		{sign(t, raw("power_w", `"-Inf"`), key), hearth.ReasonBadValue},
		{sign(t, raw("power_w", `"100"`), key), hearth.ReasonBadJSON},
		{sign(t, []byte(goodLease), rogue), hearth.ReasonUnknownKey},
		{otherBytes, hearth.ReasonBadSignature},
		{[]byte(goodLease), hearth.ReasonUnsigned},
	}
	for _, in := range inputs {
		harness.Publish(t, m.URL(), base+"/setpoint", in.payload, false)
	}
	msgs := rec.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= len(inputs) })
	got := acks(t, msgs, base+"/setpoint/ack")
	for i, in := range inputs {
		if got[i].Result != hearth.ResultRejected || got[i].Reason != in.reason {
			t.Errorf("input %d (%.40q): ack %+v, want rejected/%s", i, in.payload, got[i], in.reason)
		}
		mustValidate(t, "ack", msgs[i].Payload)
	}
	if l := sub.leases(); len(l) != 0 {
		t.Errorf("hostile inputs reached safety: %+v", l)
	}
	if st := s.Stats(); st.SetpointsRejected != uint64(len(inputs)) {
		t.Errorf("Stats().SetpointsRejected = %d, want %d", st.SetpointsRejected, len(inputs))
	}
}

// TestAckKeptAcrossOutage checks that an ack whose publish fails is sent
// after the next connect rather than lost.
func TestAckKeptAcrossOutage(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	proxy := harness.StartProxy(t, m.Addr())
	base := "hearth/v1/gw-keepack"
	rec := harness.Subscribe(t, m.URL(), base+"/setpoint/ack")
	release := make(chan struct{})
	s := startSession(t, proxy.URL(), "gw-keepack", nil, func(s *Session) {
		s.HandleSetpoints(nil, nil, func(sp hearth.Setpoint, _ time.Time) hearth.Ack {
			<-release // safety is busy while the link dies
			return hearth.Ack{Result: hearth.ResultApplied}
		})
	})
	waitConnected(t, s)
	harness.Publish(t, m.URL(), base+"/setpoint", forGW(t, "gw-keepack"), false)
	waitUntil(t, "setpoint received", func() bool { return s.Stats().SetpointsReceived == 1 })
	proxy.Refuse(true)
	proxy.Cut()
	waitUntil(t, "session notices the cut", func() bool { return !s.Connected() })
	close(release)
	waitUntil(t, "ack kept", func() bool { return s.Stats().AcksPending == 1 })
	proxy.Refuse(false)
	msgs := rec.WaitFor(t, wait, func(m []harness.Message) bool { return len(m) >= 1 })
	if a := acks(t, msgs, base+"/setpoint/ack"); a[0].ID != "b7e1" || a[0].Version != 42 || a[0].Result != hearth.ResultApplied {
		t.Errorf("ack after reconnect = %+v, want applied b7e1/42", a[0])
	}
	waitUntil(t, "no ack pending", func() bool { return s.Stats().AcksPending == 0 })
}

func TestEventEncoding(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("x", 3600))
	tests := []struct {
		ev      hearth.Event
		want    string
		wantErr bool
	}{
		{hearth.Event{ID: 1, Time: ts, Type: "gap", Data: json.RawMessage(` { "from_seq" : 1, "to_seq":2 } `)},
			`{"id":1,"ts":"2026-11-25T09:00:00Z","type":"gap","from_seq":1,"to_seq":2}`, false},
		{hearth.Event{ID: 2, Time: ts, Type: "x"}, `{"id":2,"ts":"2026-11-25T09:00:00Z","type":"x"}`, false},
		{hearth.Event{ID: 3, Time: ts, Type: "x", Data: json.RawMessage(`{}`)}, `{"id":3,"ts":"2026-11-25T09:00:00Z","type":"x"}`, false},
		{hearth.Event{ID: 4, Time: ts, Type: "x", Data: json.RawMessage(`[1]`)}, "", true},
		{hearth.Event{ID: 5, Time: ts, Type: "x", Data: json.RawMessage(`{"type":"y"}`)}, "", true},
		{hearth.Event{ID: 6, Time: ts, Type: "x", Data: json.RawMessage(`{"a":1,"a":2}`)}, "", true},
		{hearth.Event{ID: 7, Time: ts}, "", true},
	}
	for _, tt := range tests {
		got, err := EncodeEvent(tt.ev)
		if err != nil && !errors.Is(err, hearth.ErrInvalidEvent) {
			t.Errorf("EncodeEvent(%+v): %v does not wrap hearth.ErrInvalidEvent", tt.ev, err)
		}
		if (err != nil) != tt.wantErr || (!tt.wantErr && string(got) != tt.want) {
			t.Errorf("EncodeEvent(%+v) = %s, %v; want %s (error %t)", tt.ev, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestACLConfinesGateway runs Mosquitto as in production: client
// certificates required, the certificate's common name as user name, and
// an ACL that confines each gateway to its own topics. The gateway works
// on its own topics; what it publishes on another gateway's is dropped.
func TestACLConfinesGateway(t *testing.T) {
	t.Parallel()
	certs := harness.GenerateCerts(t)
	acl := strings.Join([]string{
		"# gateways: their own subtree only",
		"pattern write hearth/v1/%u/telemetry",
		"pattern write hearth/v1/%u/telemetry/backfill",
		"pattern write hearth/v1/%u/event",
		"pattern write hearth/v1/%u/status",
		"pattern write hearth/v1/%u/state",
		"pattern write hearth/v1/%u/setpoint/ack",
		"pattern read hearth/v1/%u/setpoint",
		"",
		"user cloud",
		"topic readwrite hearth/v1/#",
	}, "\n")
	m := harness.StartMosquitto(t, harness.WithTLS(certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, true), harness.WithACL(acl))
	gwCert, gwKey := certs.Client(t, "gw-a")
	cloudCert, cloudKey := certs.Client(t, "cloud")
	cloudTLS := certs.TLSConfig(t, cloudCert, cloudKey)
	rec := harness.SubscribeTLS(t, m.URL(), "hearth/v1/#", cloudTLS)

	var sub submitter
	s := startSession(t, m.URL(), "gw-a", func(c *Config) {
		c.CAFile, c.CertFile, c.KeyFile = certs.CAFile, gwCert, gwKey
	}, func(s *Session) { s.HandleSetpoints(nil, nil, sub.submit) })
	waitConnected(t, s)
	ctx := context.Background()
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1)}, false); err != nil {
		t.Fatalf("PublishTelemetry on own topic: %v", err)
	}
	// Publish straight to another gateway's topics on the same connection.
	// Mosquitto acknowledges a refused QoS 1 publish and drops it.
	raw := s
	p, err := raw.send("hearth/v1/gw-b/setpoint/ack", []byte(`{"spoof":true}`), false)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.confirm(ctx, p)
	p, err = raw.send("hearth/v1/gw-b/setpoint", []byte(goodLease), false)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.confirm(ctx, p)
	harness.PublishTLS(t, m.URL(), "hearth/v1/gw-a/setpoint", forGW(t, "gw-a"), false, cloudTLS)
	// The setpoint's ack is the marker: everything the gateway sent before
	// it has been routed by then.
	msgs := rec.WaitFor(t, wait, func(m []harness.Message) bool { return count(m, "hearth/v1/gw-a/setpoint/ack") == 1 })
	for _, msg := range msgs {
		if strings.HasPrefix(msg.Topic, "hearth/v1/gw-b/") {
			t.Errorf("gateway gw-a published on %s, which the ACL forbids", msg.Topic)
		}
	}
	if count(msgs, "hearth/v1/gw-a/telemetry") != 1 || count(msgs, "hearth/v1/gw-a/status") < 1 {
		t.Errorf("own topics not delivered: %v", msgs)
	}
	if !strings.Contains(m.Log(), "Denied PUBLISH from hearth-gw-a") {
		t.Errorf("broker log does not show the denied publish")
	}
	if l := sub.leases(); len(l) != 1 {
		t.Errorf("%d leases, want 1", len(l))
	}

	// Another gateway's certificate does not give access to gw-a's setpoints.
	otherCert, otherKey := certs.Client(t, "gw-b")
	spy := harness.SubscribeTLS(t, m.URL(), "hearth/v1/gw-a/#", certs.TLSConfig(t, otherCert, otherKey))
	harness.PublishTLS(t, m.URL(), "hearth/v1/gw-a/setpoint", []byte(fmt.Sprintf(`{"n":%d}`, 2)), false, cloudTLS)
	rec.WaitFor(t, wait, func(m []harness.Message) bool { return count(m, "hearth/v1/gw-a/setpoint/ack") == 2 })
	if got := spy.Messages(); len(got) != 0 {
		t.Errorf("gw-b read gw-a's topics: %v", got)
	}
}
