package harness

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
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

// SubscribeCluster records topic on a broker cluster (the nodes' URLs)
// through one client with a persistent session that moves to another node
// when its node goes away (the session, and what was queued for it while
// the client moved, is the cluster's to keep). It returns once the first
// subscription is acknowledged; the client disconnects when the test ends.
func SubscribeCluster(t testing.TB, urls []string, topic string) *Recorder {
	t.Helper()
	r := &Recorder{notify: make(chan struct{})}
	var id [6]byte
	_, _ = rand.Read(id[:])
	handler := func(_ paho.Client, m paho.Message) {
		r.add(Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained(), QoS: m.Qos()})
	}
	subscribed := make(chan error, 1)
	o := paho.NewClientOptions().
		SetClientID("harness-cluster-" + hex.EncodeToString(id[:])).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(handler). // queued messages may come before SUBSCRIBE
		SetConnectTimeout(5 * time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			go func() {
				tok := c.Subscribe(topic, 1, handler)
				tok.WaitTimeout(10 * time.Second)
				select {
				case subscribed <- tok.Error():
				default:
				}
			}()
		})
	for _, u := range urls {
		o.AddBroker(u)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %v: %v (timed out: %t)", urls, tok.Error(), tok.Error() == nil)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("subscribe %s on %v: %v", topic, urls, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("subscribe %s on %v: no SUBACK", topic, urls)
	}
	return r
}

// Publish sends one QoS 1 message to the broker at url and waits for the
// PUBACK, failing the test if none comes.
func Publish(t testing.TB, url, topic string, payload []byte, retained bool) {
	t.Helper()
	PublishTLS(t, url, topic, payload, retained, nil)
}

// PublishCluster sends one QoS 1 message through the nodes at urls,
// trying them in turn (a fresh connection each time) until one
// acknowledges it, as a cloud must while a cluster elects new leaders; it
// fails the test if none has within. It returns the node that did.
func PublishCluster(t testing.TB, urls []string, topic string, payload []byte, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var errs []string
	for i := 0; ; i++ {
		u := urls[i%len(urls)]
		err := publishOnce(u, "harness-pub-", topic, payload, 3*time.Second, 5*time.Second)
		if err == nil {
			return u
		}
		errs = append(errs, fmt.Sprintf("%s: %v", u, err))
		if time.Now().After(deadline) {
			t.Fatalf("publish %s: no node acknowledged it within %v: %s", topic, within, strings.Join(errs, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// publishOnce connects a fresh clean-session client (its id idPrefix and
// random hex) to url within dial, publishes payload on topic at QoS 1,
// and waits up to wait for the CONNACK and then the PUBACK; it
// disconnects either way.
func publishOnce(url, idPrefix, topic string, payload []byte, dial, wait time.Duration) error {
	var id [6]byte
	_, _ = rand.Read(id[:])
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(idPrefix + hex.EncodeToString(id[:])).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(dial))
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return errors.New("connect: timed out")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Disconnect(100)
	pub := c.Publish(topic, 1, false, payload)
	if !pub.WaitTimeout(wait) || pub.Error() != nil {
		return fmt.Errorf("publish: no puback (%v)", pub.Error())
	}
	return nil
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
