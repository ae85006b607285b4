package cloud

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

// TestSubscriptionSurvivesABrokerRestart: the client's session is clean,
// so a restarted broker has forgotten its subscription; the client must
// subscribe again by itself and receive what is published afterwards.
func TestSubscriptionSurvivesABrokerRestart(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.URL(), "cloud-resub")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 16)
	if err := c.Subscribe(ctx, "hearth/v1/gw/setpoint/ack", func(m Message) { got <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	m.Start()
	// Published until one arrives: the client reconnects and subscribes
	// again in its own time.
	for {
		harness.Publish(t, m.URL(), "hearth/v1/gw/setpoint/ack", []byte(`{"after":"restart"}`), false)
		select {
		case p := <-got:
			if p != `{"after":"restart"}` {
				t.Fatalf("got %s", p)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("nothing received after the broker restarted: the subscription was not renewed")
		}
	}
}

// TestSubscribeRetriesARefusal: a broker that refuses a subscription for
// now (SUBACK 0x80, as a NATS cluster electing a leader does) is asked
// again. The broker here is a minimal MQTT 3.1.1 server that refuses the
// first SUBSCRIBE and grants the second.
func TestSubscribeRetriesARefusal(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	subscribes := make(chan int, 8)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		n := 0
		for {
			typ, body, err := readPacket(r)
			if err != nil {
				return
			}
			switch typ >> 4 {
			case 1: // CONNECT
				conn.Write([]byte{0x20, 2, 0, 0})
			case 8: // SUBSCRIBE: packet id, then filters
				n++
				subscribes <- n
				code := byte(0x80)
				if n > 1 {
					code = 1
				}
				conn.Write([]byte{0x90, 3, body[0], body[1], code})
			case 12: // PINGREQ
				conn.Write([]byte{0xd0, 0})
			case 14: // DISCONNECT
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, "tcp://"+ln.Addr().String(), "cloud-refused")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "hearth/v1/gw/setpoint/ack", func(Message) {}); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if n := len(subscribes); n != 2 {
		t.Errorf("%d SUBSCRIBEs; want the refused one and a granted one", n)
	}
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}
