// Package uplink is the gateway's MQTT session with the cloud: it connects
// to one broker or to the nodes of a cluster in turn (and reconnects, to
// the next node after a jitter of at most BackoffMin, with capped
// exponential backoff and full jitter once every node failed),
// announces the gateway with a retained birth record and a Last Will,
// publishes telemetry, events, state and acks with QoS 1, and checks
// inbound setpoint messages (size, strict JSON, signature, values: see
// ParseSetpoint) before handing each lease on as a request, acking every
// message on …/setpoint/ack (HandleSetpoints).
//
// A publish reports success only when the broker acknowledged it on the
// same connection it was sent on, so the buffer can delete a row on nil
// and keep it on any error. No type of the MQTT library leaves the package.
package uplink

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hearth-energy/hearth"
)

// Errors returned by publishing. All but ErrPayloadTooLarge and ErrClosed
// mean "not known to be delivered, try again later".
var (
	// ErrNotConnected: the session had no connection when called.
	ErrNotConnected = errors.New("uplink: not connected")
	// ErrNotDelivered: the message was handed to a connection that was lost
	// (or replaced) before the broker's PUBACK arrived on it.
	ErrNotDelivered = errors.New("uplink: connection lost before puback")
	// ErrPubackTimeout: no PUBACK within Config.PublishTimeout.
	ErrPubackTimeout = errors.New("uplink: puback timeout")
	// ErrPayloadTooLarge: the payload exceeds Config.MaxPayload; retrying
	// the same payload cannot succeed.
	ErrPayloadTooLarge = errors.New("uplink: payload too large")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("uplink: session closed")
)

// stableConnection is how long a connection must last for the reconnect
// backoff to start again from BackoffMin. A broker that accepts and then
// drops us at once must not be hammered at the minimum delay.
const stableConnection = 30 * time.Second

// Session is one gateway's MQTT session. Create it with New, register the
// setpoint handler and birth record, then Start; Close ends it. Its methods
// are safe for concurrent use.
type Session struct {
	cfg   Config
	log   *slog.Logger
	nodes []string // broker URLs, tried in turn from a random one
	// stable is how long a connection must last for the backoff to
	// start again from BackoffMin: stableConnection.
	stable time.Duration
	tls    *tls.Config
	topics topics
	inbox  chan inbound // setpoint payloads waiting for the handler
	// wake cuts short the wait before the next connection attempt
	// (Reconnect); it holds at most one request.
	wake chan struct{}
	// inboxBytes is the payload bytes in inbox, guarded by mu.
	inboxBytes int
	birthC     chan struct{} // birth changed while connected: republish

	rngMu sync.Mutex
	rng   *rand.Rand

	ackMu sync.Mutex // serialises publishing kept acks

	mu         sync.Mutex
	node       int // index in nodes of the node in use, or tried next
	onLink     func(LinkChange)
	cur        *connection // current connection, nil when down
	gen        uint64      // incremented on every connect and every loss
	birth      Birth
	onSetpoint func(payload []byte, received time.Time)
	trust      Trust // what setpoints are checked by (HandleSetpoints, SetKeys)
	// keysRequired: an empty key set refuses every setpoint (RequireKeys).
	keysRequired bool
	acks         []hearth.Ack // acks not yet confirmed, oldest first, resent on connect
	stats        Stats
	started      bool
	closed       bool
	cancel       context.CancelFunc
	runDone      chan struct{} // closed when the connect loop has exited
	wg           sync.WaitGroup
}

type topics struct {
	status, telemetry, backfill, setpoint string
	event, state, ack                     string
	base                                  string
}

// inbound is one setpoint message as it arrived.
type inbound struct {
	payload  []byte
	received time.Time
}

// connection is one MQTT connection: one paho client over one socket. A
// client is never reused, so nothing sent on an old connection can be
// acknowledged as if on a new one.
type connection struct {
	client paho.Client
	broker string // the node's URL
	gen    uint64 // set under Session.mu once connected
	since  time.Time

	mu   sync.Mutex
	conn net.Conn // raw socket, once dialled
	err  error    // why it was lost

	lostOnce sync.Once
	lost     chan struct{}
}

// kill closes the socket without an MQTT DISCONNECT, so the broker treats
// it as an unclean loss (and fires the Last Will).
func (c *connection) kill() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

func (c *connection) markLost(err error) {
	c.lostOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.lost)
	})
}

func (c *connection) lostErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return errors.New("connection lost")
	}
	return c.err
}

// watchedConn reports the first read or write error on the socket at once,
// before paho gets round to its own cleanup, so no publish can be counted
// as acknowledged on a connection that already failed.
type watchedConn struct {
	net.Conn
	onErr func(error)
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.onErr(err)
	}
	return n, err
}

func (w *watchedConn) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	if err != nil {
		w.onErr(err)
	}
	return n, err
}

// Stats is a snapshot of the session's counters.
type Stats struct {
	Connected      bool
	ConnectedSince time.Time // zero when down
	// Broker is the URL of the node in use while connected; while down,
	// of the node tried next.
	Broker            string
	Attempts          uint64 // connection attempts, successful or not
	Connects          uint64 // connections established (CONNACK and SUBACK received)
	Disconnects       uint64 // established connections lost or closed
	LastError         string // most recent connect or connection error
	LastErrorAt       time.Time
	Published         uint64 // messages acknowledged by PUBACK on their connection
	PublishFailures   uint64 // publishes that returned an error other than ErrNotConnected
	PubackTimeouts    uint64 // of which no PUBACK in time
	NotConnected      uint64 // publishes refused because the session was down
	SetpointsReceived uint64 // setpoint messages queued for the handler
	SetpointsDropped  uint64 // setpoint messages dropped: queue full or no handler
	SetpointsRejected uint64 // setpoint messages refused by ParseSetpoint
	AcksPending       int    // acks waiting for a connection
	AcksDropped       uint64 // acks lost because the pending queue was full
	// BootDelayUntil is when the random boot delay ends, while the
	// session waits it out before its first attempt; zero otherwise.
	BootDelayUntil time.Time
	// NextAttempt is when the next connection attempt is due, while the
	// session waits (boot delay or backoff); zero while connected or
	// attempting.
	NextAttempt time.Time
	// Dialed is when the session last opened a TCP connection to a node,
	// DialedBroker that node's URL; zero and "" before the first. An
	// attempt that got this far and no further (no CONNACK, no SUBACK)
	// was the broker's to answer.
	Dialed       time.Time
	DialedBroker string
}

// New validates cfg and builds the TLS configuration (broker verified
// against CAFile, client certificate from CertFile/KeyFile). It does not
// touch the network; Start does.
func New(cfg Config) (*Session, error) {
	tc, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("uplink config: %w", err)
	}
	base := cfg.TopicPrefix + "/" + cfg.GatewayID
	s := &Session{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "uplink"),
		tls:    tc,
		nodes:  append([]string(nil), cfg.Nodes()...),
		stable: stableConnection,
		topics: topics{
			base:      base,
			status:    base + "/status",
			telemetry: base + "/telemetry",
			backfill:  base + "/telemetry/backfill",
			setpoint:  base + "/setpoint",
			event:     base + "/event",
			state:     base + "/state",
			ack:       base + "/setpoint/ack",
		},
		inbox:  make(chan inbound, cfg.SetpointQueue),
		wake:   make(chan struct{}, 1),
		birthC: make(chan struct{}, 1),
		rng:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		birth:  Birth{Version: hearth.Version},
	}
	// A fleet that lists the same nodes spreads over them.
	s.node = s.rng.IntN(len(s.nodes))
	return s, nil
}

// Start connects in the background and keeps reconnecting until Close is
// called or ctx is cancelled. A broker that is down or refuses us is not
// an error: the session retries with backoff and reports through Stats.
// Calling Start again, or after Close, does nothing.
func (s *Session) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.runDone = make(chan struct{})
	s.wg.Add(2)
	go s.run(ctx)
	go s.dispatch(ctx)
}

// Close publishes a retained {"state":"offline"} status and disconnects
// cleanly (the Last Will fires only on an unclean loss, so it has to be
// said explicitly). If the offline status cannot be confirmed, the socket
// is dropped without DISCONNECT so that the broker publishes the Will
// instead. Close then waits for the session's goroutines, including a
// setpoint handler in progress, until ctx ends.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel, runDone := s.cancel, s.runDone
	s.mu.Unlock()
	if cancel == nil { // never started
		return nil
	}
	cancel()
	select {
	case <-runDone:
	case <-ctx.Done():
		return fmt.Errorf("uplink close: %w", ctx.Err())
	}
	err := s.goodbye(ctx)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("uplink close: setpoint handler still running: %w", ctx.Err()))
	}
	return err
}

// Connected reports whether the session has an established connection.
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// LastError is the last connection error, "" when none.
func (s *Session) LastError() string { return s.Stats().LastError }

// Connects counts the connections established so far.
func (s *Session) Connects() uint64 { return s.Stats().Connects }

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Connected = s.cur != nil
	st.Broker = s.nodes[s.node]
	if s.cur != nil {
		st.ConnectedSince = s.cur.since
		st.Broker = s.cur.broker
	}
	return st
}

// Reconnect cuts short the wait before the next connection attempt, be it
// the boot delay or a backoff: the attempt starts at once. It reports
// whether the session was waiting; a connected session, or one attempting
// right now, is left alone (a request made during an attempt that then
// fails skips the next backoff). For a person at the gateway: automatic
// retries keep their jitter.
func (s *Session) Reconnect() (waiting bool) {
	s.mu.Lock()
	waiting = s.cur == nil && !s.stats.NextAttempt.IsZero()
	connected := s.cur != nil
	s.mu.Unlock()
	if connected {
		return false
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return waiting
}

// wait waits d before the next attempt, or until ctx ends (false) or
// Reconnect is called; Stats shows when the attempt is due meanwhile.
func (s *Session) wait(ctx context.Context, d time.Duration, boot bool) bool {
	due := time.Now().Add(d)
	s.mu.Lock()
	s.stats.NextAttempt = due
	if boot {
		s.stats.BootDelayUntil = due
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.stats.NextAttempt, s.stats.BootDelayUntil = time.Time{}, time.Time{}
		s.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.wake:
		s.log.Info("mqtt reconnect requested: attempting now")
		return true
	case <-ctx.Done():
		return false
	}
}

// OnSetpoint sets the function that receives each payload published to
// {prefix}/{gateway}/setpoint, unparsed: validating it is the agent's job.
// fn runs on a goroutine owned by the session, one payload at a time; while
// it is busy, up to Config.SetpointQueue payloads wait, and further ones are
// dropped and counted. A slow fn never stalls publishing.
func (s *Session) OnSetpoint(fn func(payload []byte)) {
	s.mu.Lock()
	s.onSetpoint = func(p []byte, _ time.Time) { fn(p) }
	s.mu.Unlock()
}

// run is the connect loop. It owns every connection it makes.
func (s *Session) run(ctx context.Context) {
	defer s.wg.Done()
	defer close(s.runDone)
	defer func() {
		// Cancelled by the caller's ctx rather than by Close: still leave
		// cleanly, so the cloud sees "offline" rather than a stale "online".
		s.mu.Lock()
		closing := s.closed
		s.mu.Unlock()
		if !closing {
			gctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
			defer cancel()
			if err := s.goodbye(gctx); err != nil {
				s.log.Warn("mqtt leave", "err", err)
			}
		}
	}()

	if s.cfg.BootDelayMax > 0 {
		d := s.jitter(s.cfg.BootDelayMax)
		s.log.Info("mqtt boot delay", "delay", d)
		if !s.wait(ctx, d, true) {
			return
		}
	}
	// attempt counts the rounds of failures since the last stable
	// connection (it sets the backoff window); tried counts the nodes
	// that failed or dropped a connection that did not last, in the
	// current round.
	attempt, tried := 0, 0
	for ctx.Err() == nil {
		broker := s.nodeInUse()
		c, err := s.connect(ctx, broker)
		if ctx.Err() != nil {
			return // an established connection is left for goodbye
		}
		if err != nil {
			s.recordError(err)
			s.nextNode()
			tried++
			d := s.jitter(s.cfg.BackoffMin) // the next node of the round
			if tried >= len(s.nodes) {      // every node failed: back off
				d = s.backoff(attempt)
				attempt++
				tried = 0
			}
			s.log.Warn("mqtt connect failed", "broker", broker, "err", err, "attempt", attempt, "retry_in", d, "next", s.nodeInUse())
			if !s.wait(ctx, d, false) {
				return
			}
			continue
		}
		select { // a request to reconnect is answered by this connection
		case <-s.wake:
		default:
		}
		s.log.Info("mqtt connected", "broker", broker, "client_id", s.cfg.ClientID)
		s.linkChanged(LinkChange{Up: true, Broker: broker})
		lostErr := s.serve(ctx, c)
		if ctx.Err() != nil {
			return
		}
		s.dropConnection(c, lostErr)
		s.linkChanged(LinkChange{Broker: broker, Err: c.lostErr().Error()})
		// The boot delay is for boots: a lost connection is followed by
		// a short jitter and the next node (the same one when alone). A
		// connection that did not last counts as a failed attempt of the
		// round: the next node still comes after the jitter alone, and
		// once every node has failed or dropped us in turn the session
		// backs off, so a broker that accepts and drops us at once is not
		// hammered.
		d := s.jitter(s.cfg.BackoffMin)
		if time.Since(c.since) >= s.stable {
			attempt, tried = 0, 0
		} else if tried++; tried >= len(s.nodes) {
			d = s.backoff(attempt)
			attempt++
			tried = 0
		}
		s.nextNode()
		s.log.Warn("mqtt connection lost", "broker", broker, "err", lostErr, "up_for", time.Since(c.since).Round(time.Millisecond), "retry_in", d, "next", s.nodeInUse())
		if !s.wait(ctx, d, false) {
			return
		}
	}
}

// LinkChange is a connection made or lost, as the session's connect loop
// saw it.
type LinkChange struct {
	Up     bool   // connected; false: lost
	Broker string // the node's URL
	// Err is why the connection was lost: the first error on it, as its
	// connection-lost handler or socket reported it (not a later retry's).
	Err string
}

// OnLink sets the function told of every connection made and lost, in
// order, on the connect loop's goroutine: it must return quickly.
func (s *Session) OnLink(fn func(LinkChange)) {
	s.mu.Lock()
	s.onLink = fn
	s.mu.Unlock()
}

func (s *Session) linkChanged(ch LinkChange) {
	s.mu.Lock()
	fn := s.onLink
	s.mu.Unlock()
	if fn != nil {
		fn(ch)
	}
}

// nodeInUse is the URL of the node in use, or tried next.
func (s *Session) nodeInUse() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[s.node]
}

// nextNode moves on to the next node of the list.
func (s *Session) nextNode() {
	s.mu.Lock()
	s.node = (s.node + 1) % len(s.nodes)
	s.mu.Unlock()
}

// connect makes one connection attempt: dial (and TLS), CONNECT with the
// Last Will, SUBSCRIBE to the setpoint topic. On success the connection
// becomes current with a new generation.
func (s *Session) connect(ctx context.Context, broker string) (*connection, error) {
	s.mu.Lock()
	s.stats.Attempts++
	will := s.statusPayload("offline", "connection_lost", false)
	s.mu.Unlock()

	c := &connection{lost: make(chan struct{}), broker: broker}
	opts := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(s.cfg.ClientID).
		SetUsername(s.cfg.Username).
		SetPassword(s.cfg.Password).
		SetProtocolVersion(4).
		SetCleanSession(s.cfg.CleanSession).
		SetDefaultPublishHandler(s.receive). // queued messages may arrive before SUBSCRIBE is sent
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetStore(paho.NewMemoryStore()).
		SetOrderMatters(true). // setpoints reach the handler in broker order; receive never blocks
		SetKeepAlive(s.cfg.KeepAlive).
		SetPingTimeout(min(s.cfg.KeepAlive, s.cfg.PublishTimeout)).
		SetConnectTimeout(s.cfg.ConnectTimeout).
		SetWriteTimeout(s.cfg.PublishTimeout).
		SetBinaryWill(s.topics.status, will, 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			c.markLost(err)
			s.lost(c)
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			return s.dial(ctx, u, c)
		})
	c.client = paho.NewClient(opts)

	if err := s.await(ctx, c, c.client.Connect()); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	sub := c.client.Subscribe(s.topics.setpoint, 1, s.receive)
	if err := s.await(ctx, c, sub); err != nil {
		c.kill()
		return nil, fmt.Errorf("subscribe %s: %w", s.topics.setpoint, err)
	}
	if st, ok := sub.(*paho.SubscribeToken); ok {
		if q, ok := st.Result()[s.topics.setpoint]; ok && q > 1 {
			c.kill()
			return nil, fmt.Errorf("subscribe %s: refused by broker (code %#x)", s.topics.setpoint, q)
		}
	}

	s.mu.Lock()
	s.gen++
	c.gen = s.gen
	c.since = time.Now()
	s.cur = c
	s.stats.Connects++
	s.mu.Unlock()
	return c, nil
}

// await waits for a connect or subscribe token, bounded by ctx and
// ConnectTimeout. When it gives up it kills the socket, so paho's own
// goroutines end too, and waits briefly for the token to settle.
func (s *Session) await(ctx context.Context, c *connection, tok paho.Token) error {
	timer := time.NewTimer(s.cfg.ConnectTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("no answer within %v", s.cfg.ConnectTimeout)
	}
	c.kill()
	select {
	case <-tok.Done():
	case <-time.After(time.Second):
	}
	return err
}

// dial opens the socket for paho, with TLS when configured, and wraps it
// so the first I/O error marks the connection lost.
func (s *Session) dial(ctx context.Context, u *url.URL, c *connection) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.stats.Dialed, s.stats.DialedBroker = time.Now(), c.broker
	s.mu.Unlock()
	if tcfg := tlsFor(s.tls, u); tcfg != nil {
		tc := tls.Client(conn, tcfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	w := &watchedConn{Conn: conn, onErr: func(err error) {
		c.markLost(err)
		s.lost(c)
	}}
	c.mu.Lock()
	c.conn = w
	c.mu.Unlock()
	return w, nil
}

// lost retires c if it is the current connection. It runs on paho's and
// the socket's goroutines, so it only flips state and never blocks.
func (s *Session) lost(c *connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != c {
		return
	}
	s.cur = nil
	s.gen++
	s.stats.Disconnects++
	err := c.lostErr()
	s.stats.LastError = err.Error()
	s.stats.LastErrorAt = time.Now()
}

// dropConnection makes sure a lost connection is fully retired: state
// flipped and socket closed.
func (s *Session) dropConnection(c *connection, err error) {
	c.markLost(err)
	s.lost(c)
	c.kill()
}

// serve publishes the birth record and then waits for the connection to be
// lost (returning why) or ctx to end, republishing the birth when it
// changes and every Heartbeat.
func (s *Session) serve(ctx context.Context, c *connection) error {
	s.publishBirth(ctx)
	s.flushAcks(ctx)
	beat := time.NewTicker(s.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-c.lost:
			return c.lostErr()
		case <-beat.C: // the retained status, with a fresh ts: alive
			s.publishBirth(ctx)
		case <-s.birthC:
			s.publishBirth(ctx)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Session) publishBirth(ctx context.Context) {
	s.mu.Lock()
	p := s.statusPayload("online", "", true)
	s.mu.Unlock()
	if err := s.publish(ctx, s.topics.status, p, true); err != nil {
		s.log.Warn("mqtt birth not confirmed", "err", err)
	}
}

// goodbye ends the current connection, if any: retained offline status,
// then DISCONNECT; or, if the status is not confirmed, a dropped socket so
// the Will says it instead.
func (s *Session) goodbye(ctx context.Context) error {
	s.mu.Lock()
	c := s.cur
	p := s.statusPayload("offline", "shutdown", true)
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	err := s.publish(ctx, s.topics.status, p, true)
	s.mu.Lock()
	if s.cur == c {
		s.cur = nil
		s.gen++
		s.stats.Disconnects++
	}
	s.mu.Unlock()
	if err != nil {
		c.kill()
		return fmt.Errorf("publish offline status: %w", err)
	}
	c.client.Disconnect(250)
	c.kill()
	s.log.Info("mqtt disconnected")
	return nil
}

// receive is paho's handler for setpoint messages. It must not block:
// it queues a copy of the payload or drops it.
func (s *Session) receive(_ paho.Client, m paho.Message) {
	if m.Topic() != s.topics.setpoint {
		s.log.Warn("message on an unexpected topic dropped", "topic", m.Topic())
		return
	}
	p := m.Payload()
	if max := s.cfg.MaxSetpointBytes; max > 0 && len(p) > max {
		// Only the length matters to the parser then (too_large): keep
		// the queue's memory bounded by what a valid setpoint may hold.
		p = p[:max+1]
	}
	in := inbound{payload: bytes.Clone(p), received: time.Now()}
	s.mu.Lock()
	fits := s.inboxBytes+len(in.payload) <= s.cfg.SetpointQueueBytes
	if fits {
		select {
		case s.inbox <- in:
			s.inboxBytes += len(in.payload)
			s.stats.SetpointsReceived++
		default:
			fits = false
		}
	}
	if !fits {
		s.stats.SetpointsDropped++
	}
	n := s.stats.SetpointsDropped
	s.mu.Unlock()
	if !fits {
		s.log.Warn("setpoint dropped: handler queue full", "queue", cap(s.inbox), "dropped_total", n)
	}
}

// dispatch hands queued setpoints to the handler, one at a time.
func (s *Session) dispatch(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-s.inbox:
			s.mu.Lock()
			s.inboxBytes -= len(in.payload)
			fn := s.onSetpoint
			if fn == nil {
				s.stats.SetpointsDropped++
			}
			s.mu.Unlock()
			if fn == nil {
				s.log.Warn("setpoint dropped: no handler")
				continue
			}
			fn(in.payload, in.received)
		}
	}
}

func (s *Session) recordError(err error) {
	s.mu.Lock()
	s.stats.LastError = err.Error()
	s.stats.LastErrorAt = time.Now()
	s.mu.Unlock()
}

func (s *Session) jitter(max time.Duration) time.Duration {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return time.Duration(s.rng.Int64N(int64(max) + 1))
}

// backoff returns the delay before retry n, from the session's generator.
func (s *Session) backoff(n int) time.Duration {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return backoff(n, s.cfg.BackoffMin, s.cfg.BackoffMax, s.rng)
}
