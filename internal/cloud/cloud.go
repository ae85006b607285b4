// Package cloud is the operator's side of the MQTT contract, for the lab
// and demo tool (hearthsim) and for tests: it subscribes to what gateways
// publish and sends them setpoints. It is not part of the agent.
package cloud

import (
	"context"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is one message received from a broker.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Client is a cloud-side MQTT client.
type Client struct {
	c mqtt.Client
}

// Dial connects to broker (tcp://host:port) within ctx's deadline.
func Dial(ctx context.Context, broker, clientID string) (*Client, error) {
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetProtocolVersion(4).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond).SetMaxReconnectInterval(2 * time.Second).
		SetOrderMatters(false).SetCleanSession(true)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("connect %s: %w", broker, err)
		}
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s: %w", broker, ctx.Err())
	}
	return &Client{c: c}, nil
}

// Subscribe delivers every message on filter to fn, in its own goroutine
// per message order as the broker sends them. fn must not block for long.
func (c *Client) Subscribe(ctx context.Context, filter string, fn func(Message)) error {
	tok := c.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		fn(Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	})
	return wait(ctx, tok, "subscribe "+filter)
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
