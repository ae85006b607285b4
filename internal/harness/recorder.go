package harness

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Message is one MQTT message as a subscriber received it.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
	QoS      byte
}

func (m Message) String() string {
	return fmt.Sprintf("%s retained=%t %s", m.Topic, m.Retained, m.Payload)
}

// Recorder is a subscriber that keeps every message it receives. It is
// safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	msgs   []Message
	notify chan struct{} // closed and replaced whenever a message arrives
}

// Subscribe connects a fresh clean-session MQTT 3.1.1 client to url
// (tcp://host:port), subscribes to topic (wildcards allowed) at QoS 1 and
// returns once the broker has acknowledged the subscription. The client
// disconnects when the test ends.
func Subscribe(t testing.TB, url, topic string) *Recorder {
	t.Helper()
	return SubscribeTLS(t, url, topic, nil)
}

// SubscribeTLS is Subscribe over TLS with tc (tls:// URLs); a nil tc is
// plain TCP.
func SubscribeTLS(t testing.TB, url, topic string, tc *tls.Config) *Recorder {
	t.Helper()
	r := &Recorder{notify: make(chan struct{})}
	c := connect(t, url, "harness-sub-", tc)
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		r.add(Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained(), QoS: m.Qos()})
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s on %s: %v (timed out: %t)", topic, url, tok.Error(), tok.Error() == nil)
	}
	return r
}

// Publish sends one QoS 1 message to the broker at url and waits for the
// PUBACK, failing the test if none comes.
func Publish(t testing.TB, url, topic string, payload []byte, retained bool) {
	t.Helper()
	PublishTLS(t, url, topic, payload, retained, nil)
}

// PublishTLS is Publish over TLS with tc; a nil tc is plain TCP.
func PublishTLS(t testing.TB, url, topic string, payload []byte, retained bool, tc *tls.Config) {
	t.Helper()
	c := connect(t, url, "harness-pub-", tc)
	tok := c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s on %s: %v (timed out: %t)", topic, url, tok.Error(), tok.Error() == nil)
	}
}

func connect(t testing.TB, url, idPrefix string, tc *tls.Config) paho.Client {
	t.Helper()
	var id [6]byte
	_, _ = rand.Read(id[:])
	o := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(idPrefix + hex.EncodeToString(id[:])).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetOrderMatters(true). // Messages() is in arrival order; the handler never blocks
		SetConnectTimeout(5 * time.Second)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v (timed out: %t)", url, tok.Error(), tok.Error() == nil)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func (r *Recorder) add(m Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
}

// Messages returns a copy of the messages received so far, in arrival
// order.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

// WaitFor waits until cond, called with all messages received so far,
// returns true, and returns those messages. The test fails, listing what
// did arrive, if that does not happen within timeout.
func (r *Recorder) WaitFor(t testing.TB, timeout time.Duration, cond func(msgs []Message) bool) []Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		msgs := append([]Message(nil), r.msgs...)
		notify := r.notify
		r.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-notify:
		case <-deadline.C:
			var b strings.Builder
			for _, m := range msgs {
				fmt.Fprintf(&b, "\n  %s", m)
			}
			t.Fatalf("condition not met within %v; %d messages received:%s", timeout, len(msgs), b.String())
			return nil
		}
	}
}
