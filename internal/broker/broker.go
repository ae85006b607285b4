// Package broker runs a small embedded MQTT 3.1.1 broker for the lab and
// demo tool (hearthsim --mqtt ADDR). It accepts every client and allows
// every topic: it is a convenience for a bench, never something a gateway
// runs in the field. No type of the underlying library leaves the package.
package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
)

// Broker is a running embedded broker. Create it with Start and release it
// with Close.
type Broker struct {
	srv  *mqtt.Server
	addr string

	stop chan struct{} // closed by Close; ends the ctx watcher
	wg   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Start listens on addr (host:port; port 0 picks a free one) and serves MQTT
// on it until Close is called or ctx is cancelled. A nil logger discards the
// broker's logs. It returns an error if the address cannot be bound; once it
// returns, the broker accepts connections.
func Start(ctx context.Context, addr string, logger *slog.Logger) (*Broker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("broker listen %s: %w", addr, err)
	}

	// No storage hook: retained messages and sessions live in memory only,
	// which is all a demo needs.
	srv := mqtt.New(&mqtt.Options{Logger: logger.With("component", "broker")})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker auth hook: %w", err)
	}
	if err := srv.AddListener(newListener("tcp", ln)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker add listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("broker serve: %w", err)
	}

	b := &Broker{srv: srv, addr: ln.Addr().String(), stop: make(chan struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case <-ctx.Done():
			b.shutdown()
		case <-b.stop:
		}
	}()
	logger.Info("embedded mqtt broker listening", "addr", b.addr)
	return b, nil
}

// Addr returns the address the broker listens on, as host:port.
func (b *Broker) Addr() string { return b.addr }

// Close disconnects every client and stops listening. It is safe to call
// more than once and after ctx was cancelled.
func (b *Broker) Close() error {
	b.shutdown()
	b.wg.Wait()
	return b.closeErr
}

func (b *Broker) shutdown() {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.closeErr = b.srv.Close()
	})
}
