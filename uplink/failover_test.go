package uplink

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

// linkLog records the changes a session reports through OnLink.
type linkLog struct {
	mu  sync.Mutex
	chs []LinkChange
}

func (l *linkLog) add(ch LinkChange) {
	l.mu.Lock()
	l.chs = append(l.chs, ch)
	l.mu.Unlock()
}

func (l *linkLog) all() []LinkChange {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LinkChange(nil), l.chs...)
}

// TestFailoverToTheNextNode: a session listing two brokers that loses the
// one it is on connects to the other while the first is still down, keeps
// its pending acks across the switch, and reports both changes with the
// node's URL. The boot delay (an hour here) applies at boot only: after
// the loss the session waits a short jitter, not the boot window.
func TestFailoverToTheNextNode(t *testing.T) {
	t.Parallel()
	a, b := harness.StartMosquitto(t), harness.StartMosquitto(t)
	byURL := map[string]*harness.Mosquitto{a.URL(): a, b.URL(): b}
	var links linkLog
	s := startSession(t, "", "gw-failover", func(c *Config) {
		c.Broker, c.Brokers = "", []string{a.URL(), b.URL()}
		c.BootDelayMax = time.Hour
		c.BackoffMax = time.Hour
	}, func(s *Session) {
		s.OnLink(links.add)
		s.stable = 0                                  // the connection counts as one that lasted
		s.rng = drawsAbove(time.Minute, time.Hour, 1) // the boot delay is long: only Reconnect ends it
	})
	waitUntil(t, "boot delay", func() bool { return !s.Stats().BootDelayUntil.IsZero() })
	s.Reconnect()
	waitConnected(t, s)
	first := s.Stats().Broker
	down, ok := byURL[first]
	if !ok {
		t.Fatalf("connected to %q, not one of the nodes", first)
	}
	down.Stop()
	waitUntil(t, "connected to the other node", func() bool {
		st := s.Stats()
		return st.Connected && st.Broker != first
	})
	if _, ok := byURL[s.Stats().Broker]; !ok {
		t.Fatalf("reconnected to %q, not one of the nodes", s.Stats().Broker)
	}
	waitUntil(t, "three link changes", func() bool { return len(links.all()) >= 3 })
	chs := links.all()
	if !chs[0].Up || chs[0].Broker != first || chs[1].Up || chs[1].Broker != first || chs[1].Err == "" || !chs[2].Up || chs[2].Broker == first {
		t.Errorf("link changes %+v; want up on %s, lost on it with an error, up on the other node", chs, first)
	}
}

// TestStatsNameTheLastDial: a node that takes the TCP connection and never
// answers the CONNECT shows in Stats as dialed and not connected, so the
// time a failover spends on the broker can be told from the session's own;
// the node that then answers is the one dialed, no later than it connected.
func TestStatsNameTheLastDial(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	})
	silent := "tcp://" + ln.Addr().String()
	m := harness.StartMosquitto(t)
	began := time.Now()
	s := startSession(t, "", "gw-dialed", func(c *Config) {
		c.Broker, c.Brokers = "", []string{silent, m.URL()}
		c.ConnectTimeout = 2 * time.Second
	}, func(s *Session) { s.node = 0 })
	waitUntil(t, "the silent node dialed", func() bool { return s.Stats().DialedBroker == silent })
	if st := s.Stats(); st.Connected || st.Dialed.Before(began) || st.Dialed.After(time.Now()) {
		t.Errorf("stats while the silent node holds the CONNECT: connected %t, dialed %v (test began %v); want not connected, dialed since the test began",
			st.Connected, st.Dialed, began)
	}
	waitConnected(t, s)
	if st := s.Stats(); st.DialedBroker != m.URL() || st.Broker != m.URL() || st.Dialed.After(st.ConnectedSince) {
		t.Errorf("stats once connected: dialed %s at %v, connected to %s since %v; want %s dialed no later than it connected",
			st.DialedBroker, st.Dialed, st.Broker, st.ConnectedSince, m.URL())
	}
}

var lostLine = regexp.MustCompile(`msg="mqtt connection lost" .*broker=(\S+) .* retry_in=(\S+) next=(\S+)`)

// TestQuickDropMovesOnBeforeBackingOff: a node that drops the session soon
// after it connected counts as a failed attempt of the round: the session
// dials the next node after the jitter alone (at most backoff_min), and
// backs off only once every node has dropped it in turn, its window
// growing once a round rather than once a drop.
func TestQuickDropMovesOnBeforeBackingOff(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	a, b := harness.StartProxy(t, m.Addr()), harness.StartProxy(t, m.Addr())
	byURL := map[string]*harness.Proxy{a.URL(): a, b.URL(): b}
	const base = time.Millisecond
	var logs syncBuffer
	s, err := New(Config{Brokers: []string{a.URL(), b.URL()}, GatewayID: "gw-quickdrop",
		BackoffMin: base, BackoffMax: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.stable = time.Hour // no connection here lasts
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), wait)
		defer ccancel()
		s.Close(cctx)
	}()
	const drops = 8
	for range drops {
		waitConnected(t, s)
		st := s.Stats()
		byURL[st.Broker].Cut()
		waitUntil(t, "connected again", func() bool { n := s.Stats(); return n.Connected && n.Connects > st.Connects })
	}
	lines := lostLine.FindAllStringSubmatch(logs.String(), -1)
	if len(lines) < drops {
		t.Fatalf("%d connection lost lines for %d drops:\n%s", len(lines), drops, logs.String())
	}
	for i, l := range lines[:drops] {
		d, err := time.ParseDuration(l[2])
		if err != nil || l[3] == l[1] {
			t.Fatalf("drop %d: lost on %s, retry_in %s, next %s; want a duration and the other node", i+1, l[1], l[2], l[3])
		}
		round := i/2 + 1
		if i%2 == 0 && d > base {
			t.Errorf("drop %d, the first of round %d: waited %v before the other node; want the jitter alone, at most %v", i+1, round, d, base)
		}
		if ceil := base << (round - 1); i%2 == 1 && d > ceil {
			t.Errorf("drop %d, ending round %d: backed off %v; want at most %v, the window of round %d", i+1, round, d, ceil, round)
		}
		t.Logf("drop %d: lost %s, waited %v", i+1, l[1], d)
	}
}

// TestLostNamesTheErrorThatEndedTheConnection: the lost change carries the
// error the connection ended with, not that of the retries after it (which
// fail at once here, against a stopped broker).
func TestLostNamesTheErrorThatEndedTheConnection(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	var links linkLog
	s := startSession(t, m.URL(), "gw-lost-err", func(c *Config) {
		c.BackoffMin, c.BackoffMax = time.Millisecond, time.Millisecond
	}, func(s *Session) { s.OnLink(links.add) })
	waitConnected(t, s)
	m.Stop()
	waitUntil(t, "a retry failed", func() bool { return strings.Contains(s.LastError(), "refused") })
	chs := links.all()
	if len(chs) != 2 || chs[1].Up {
		t.Fatalf("link changes %+v; want up, then lost", chs)
	}
	if chs[1].Err == "" || strings.Contains(chs[1].Err, "refused") {
		t.Errorf("lost with %q; want the error that ended the connection, not the retry's %q", chs[1].Err, s.LastError())
	}
}

// TestNodesSpreadTheFleet: sessions listing the same nodes start at
// different ones.
func TestNodesSpreadTheFleet(t *testing.T) {
	nodes := []string{"tcp://n1:1883", "tcp://n2:1883", "tcp://n3:1883"}
	seen := map[string]int{}
	for range 90 {
		s, err := New(Config{Brokers: nodes, GatewayID: "gw"})
		if err != nil {
			t.Fatal(err)
		}
		seen[s.Stats().Broker]++
	}
	for _, n := range nodes {
		if seen[n] == 0 {
			t.Errorf("no session of 90 started at %s: %v", n, seen)
		}
	}
}

// TestHeartbeatRefreshesTheStatus: while connected, the retained online
// status is published again every Heartbeat with a later ts and the
// interval in heartbeat_s, so a cloud can tell a silent gateway (its Will
// lost with a dead broker node) from a live one.
func TestHeartbeatRefreshesTheStatus(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-beat/status")
	startSession(t, m.URL(), "gw-beat", func(c *Config) { c.Heartbeat = 2 * time.Second })
	msgs := rec.WaitFor(t, 15*time.Second, func(ms []harness.Message) bool { return len(ms) >= 3 })
	var last time.Time
	for i, msg := range msgs[:3] {
		var st struct {
			State      string    `json:"state"`
			TS         time.Time `json:"ts"`
			HeartbeatS int       `json:"heartbeat_s"`
		}
		if err := json.Unmarshal(msg.Payload, &st); err != nil {
			t.Fatal(err)
		}
		if st.State != "online" || st.HeartbeatS != 2 || !st.TS.After(last) {
			t.Errorf("status %d: %s; want online, heartbeat_s 2, a ts after the last", i, msg.Payload)
		}
		last = st.TS
		if bad, _ := harness.NewContract(harness.SchemaDir()).Check([]harness.Message{msg}); len(bad) > 0 {
			t.Error(bad)
		}
	}
}
