// Package cloud is the operator's side of the MQTT contract, for the lab
// and demo tool (hearthsim) and for tests: it subscribes to what gateways
// publish and sends them setpoints. It is not part of the agent.
package cloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is one message received from a broker.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Client is a cloud-side MQTT client. Its session is clean: it
// subscribes again to every filter after each reconnect.
type Client struct {
	c mqtt.Client

	mu       sync.Mutex
	subs     map[string]mqtt.MessageHandler // filters to subscribe again on reconnect
	connects int                            // connections made so far
}

// Options are the optional credentials of a cloud client.
type Options struct {
	// CAFile verifies a tls:// broker (system roots when empty); CertFile
	// and KeyFile are the client certificate.
	CAFile, CertFile, KeyFile string
	Username, Password        string
}

// Dial connects to broker (tcp://host:port) within ctx's deadline. broker
// may list the nodes of a cluster, comma-separated: the client connects to
// the first that answers and moves to another when it is lost.
func Dial(ctx context.Context, broker, clientID string) (*Client, error) {
	return DialWith(ctx, broker, clientID, Options{})
}

// DialWith connects to broker (tcp:// or tls://) with o's credentials,
// within ctx's deadline.
func DialWith(ctx context.Context, broker, clientID string, o Options) (*Client, error) {
	cl := &Client{subs: map[string]mqtt.MessageHandler{}}
	opts := mqtt.NewClientOptions().SetClientID(clientID).
		SetProtocolVersion(4).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond).SetMaxReconnectInterval(2 * time.Second).
		SetOrderMatters(false).SetCleanSession(true).
		SetUsername(o.Username).SetPassword(o.Password).
		SetOnConnectHandler(cl.resubscribe)
	for _, b := range strings.Split(broker, ",") {
		opts.AddBroker(strings.TrimSpace(b))
	}
	if o.CAFile != "" || o.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca file %s: no PEM certificate", o.CAFile)
			}
		}
		if o.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts.SetTLSConfig(tc)
	}
	c := mqtt.NewClient(opts)
	cl.c = c
	tok := c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("connect %s: %w", broker, err)
		}
		if !c.IsConnected() { // ConnectRetry completes the token at once
			if err := waitConnected(ctx, c); err != nil {
				c.Disconnect(0)
				return nil, fmt.Errorf("connect %s: %w", broker, err)
			}
		}
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s: %w", broker, ctx.Err())
	}
	return cl, nil
}

// resubscribe subscribes again, after a reconnect, to what was subscribed
// before: the session is clean, so the broker forgot it.
func (c *Client) resubscribe(mc mqtt.Client) {
	c.mu.Lock()
	c.connects++
	first := c.connects == 1
	subs := maps.Clone(c.subs)
	c.mu.Unlock()
	if first {
		return // Subscribe is on its way
	}
	for filter, h := range subs {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = subscribe(ctx, mc, filter, h)
		}()
	}
}

// Subscribe delivers every message on filter to fn, in its own goroutine
// per message order as the broker sends them. fn must not block for long.
// A broker that refuses the subscription for now (SUBACK 0x80, as a NATS
// cluster does while it elects a leader) is asked again until ctx ends;
// after a reconnect the client subscribes again by itself.
func (c *Client) Subscribe(ctx context.Context, filter string, fn func(Message)) error {
	h := func(_ mqtt.Client, m mqtt.Message) {
		fn(Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	}
	c.mu.Lock()
	c.subs[filter] = h
	c.mu.Unlock()
	return subscribe(ctx, c.c, filter, h)
}

func subscribe(ctx context.Context, c mqtt.Client, filter string, h mqtt.MessageHandler) error {
	for {
		tok := c.Subscribe(filter, 1, h)
		err := wait(ctx, tok, "subscribe "+filter)
		if err == nil {
			if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[filter] > 1 {
				err = fmt.Errorf("subscribe %s: refused by the broker (code %#x)", filter, st.Result()[filter])
			} else {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Publish sends payload at QoS 1 and waits for the broker's PUBACK.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, retained bool) error {
	return wait(ctx, c.c.Publish(topic, 1, retained, payload), "publish "+topic)
}

// Close disconnects.
func (c *Client) Close() { c.c.Disconnect(250) }

func wait(ctx context.Context, tok mqtt.Token, what string) error {
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
}

func waitConnected(ctx context.Context, c mqtt.Client) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !c.IsConnectionOpen() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
