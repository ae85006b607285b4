package broker

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

func TestPublishSubscribeThroughBroker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := Start(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	url := "tcp://" + b.Addr()

	rec := harness.Subscribe(t, url, "hearth/v1/+/telemetry")
	harness.Publish(t, url, "hearth/v1/gw1/telemetry", []byte(`{"readings":[]}`), false)
	harness.Publish(t, url, "hearth/v1/gw1/status", []byte(`{"state":"online"}`), true)
	msgs := rec.WaitFor(t, 5*time.Second, func(m []harness.Message) bool { return len(m) >= 1 })
	if msgs[0].Topic != "hearth/v1/gw1/telemetry" || string(msgs[0].Payload) != `{"readings":[]}` {
		t.Fatalf("got %v, want telemetry message", msgs[0])
	}

	// Retained messages reach a later subscriber.
	late := harness.Subscribe(t, url, "hearth/v1/gw1/status")
	st := late.WaitFor(t, 5*time.Second, func(m []harness.Message) bool { return len(m) >= 1 })
	if !st[0].Retained || string(st[0].Payload) != `{"state":"online"}` {
		t.Fatalf("late subscriber got %v, want retained status", st[0])
	}
	if n := len(rec.Messages()); n != 1 {
		t.Fatalf("telemetry subscriber got %d messages, want 1 (status must not match)", n)
	}
}

func TestCloseStopsListening(t *testing.T) {
	t.Parallel()
	b, err := Start(context.Background(), "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("broker still accepts on %s after Close", addr)
	}
}

func TestContextCancelCloses(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := Start(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("broker still accepting 5s after ctx cancel")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after cancel: %v", err)
	}
}

func TestStartBusyAddressFails(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if b, err := Start(context.Background(), l.Addr().String(), nil); err == nil {
		b.Close()
		t.Fatalf("Start on busy %s succeeded, want error", l.Addr())
	}
}
