package harness

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"
)

func TestMosquittoPublishSubscribeRestart(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t)
	if m.URL() != "tcp://"+m.Addr() {
		t.Fatalf("URL() = %q, want tcp://%s", m.URL(), m.Addr())
	}
	rec := Subscribe(t, m.URL(), "h/#")
	Publish(t, m.URL(), "h/a", []byte("one"), true)
	rec.WaitFor(t, 5*time.Second, func(msgs []Message) bool {
		return len(msgs) == 1 && msgs[0].Topic == "h/a" && bytes.Equal(msgs[0].Payload, []byte("one"))
	})

	m.Stop()
	if c, err := net.DialTimeout("tcp", m.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("broker still accepts on %s after Stop", m.Addr())
	}
	m.Start()
	// persistence false: the retained message is gone after a restart.
	rec2 := Subscribe(t, m.URL(), "h/#")
	Publish(t, m.URL(), "h/b", []byte("two"), false)
	msgs := rec2.WaitFor(t, 5*time.Second, func(msgs []Message) bool { return len(msgs) >= 1 })
	if msgs[0].Topic != "h/b" {
		t.Fatalf("first message after restart on %s, want h/b (retained state must not survive)", msgs[0].Topic)
	}
}

func TestProxyCut(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t)
	p := StartProxy(t, m.Addr())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// CONNECT for MQTT 3.1.1, client id "x"; expect a CONNACK back.
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'x'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil || buf[0] != 0x20 {
		t.Fatalf("no CONNACK through proxy: %v %x", err, buf)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut() = %d, want 1", n)
	}
	if _, err := c.Read(buf); err == nil {
		t.Fatal("read after Cut succeeded, want error")
	}
}

func TestFreePortIsBindable(t *testing.T) {
	t.Parallel()
	p := FreePort(t)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(p)))
	if err != nil {
		t.Fatalf("FreePort %d not bindable: %v", p, err)
	}
	l.Close()
}

// A port FreePort handed out is not handed to another test while this
// binary runs, even from another binary: the reservation is a lock on a
// file, which a second open (as another binary would make) cannot take,
// and it outlives the test, whose servers may still be stopping.
func TestFreePortIsReserved(t *testing.T) {
	var p int
	t.Run("holder", func(t *testing.T) {
		p = FreePort(t)
		if p < freePortLow || p >= freePortHigh {
			t.Fatalf("port %d outside %d-%d", p, freePortLow, freePortHigh)
		}
	})
	if f, ok := reservePort(p); ok {
		f.Close()
		t.Fatalf("port %d reservable again after the test that drew it ended", p)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
