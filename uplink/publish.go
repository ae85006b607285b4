package uplink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hearth-energy/hearth"
)

// telemetryEnvelope is the fixed part of a telemetry message:
// {"readings":[ … ]}.
const (
	telemetryHead = `{"readings":[`
	telemetryTail = `]}`
)

// PublishTelemetry publishes readings in Config.TelemetryFormat (lean by
// default, or {"readings":[…]}) to …/telemetry,
// or to …/telemetry/backfill when backfill is set, QoS 1, not retained.
// Readings that do not fit in one message of Config.MaxPayload bytes are
// split, in order, over several; up to Config.MaxInflight of them await
// their PUBACK at once.
//
// It returns n, the length of the leading run of readings that the broker
// acknowledged on the connection they were sent on, so that the caller
// deletes readings[:n] and keeps the rest. n < len(readings) comes with an
// error; readings after n may have been delivered too (the cloud
// de-duplicates by seq). A single reading larger than MaxPayload can never
// be sent: ErrPayloadTooLarge, with n its index.
func (s *Session) PublishTelemetry(ctx context.Context, readings []hearth.Reading, backfill bool) (int, error) {
	if len(readings) == 0 {
		return 0, errors.New("uplink: empty telemetry batch")
	}
	topic := s.topics.telemetry
	if backfill {
		topic = s.topics.backfill
	}
	var chunks []chunk
	var tooBig error
	if s.cfg.TelemetryFormat == FormatLean {
		chunks, tooBig = s.leanChunks(readings)
	} else {
		chunks, tooBig = s.jsonChunks(readings)
	}

	// Send with a bounded window; stop sending at the first failure.
	delivered, failed := 0, false
	var firstErr error
	window := make([]*pending, 0, s.cfg.MaxInflight)
	ends := make([]int, 0, s.cfg.MaxInflight)
	settle := func() {
		err := s.confirm(ctx, window[0])
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if err != nil {
			failed = true
		} else if !failed {
			delivered = ends[0]
		}
		window, ends = window[1:], ends[1:]
	}
	for _, c := range chunks {
		if failed {
			break
		}
		for len(window) >= s.cfg.MaxInflight {
			settle()
		}
		if failed {
			break
		}
		p, err := s.send(topic, c.payload, false)
		if err != nil {
			firstErr, failed = err, true
			break
		}
		window, ends = append(window, p), append(ends, c.end)
	}
	for len(window) > 0 {
		settle()
	}
	if firstErr != nil {
		return delivered, firstErr
	}
	if tooBig != nil {
		return delivered, fmt.Errorf("publish %s: %w", topic, tooBig)
	}
	return delivered, nil
}

// chunk is one telemetry message of a batch: readings[:end] are delivered
// once it is.
type chunk struct {
	payload []byte
	end     int
}

// jsonChunks encodes readings as {"readings":[…]} messages of at most
// MaxPayload bytes, in order, up to the first that cannot be encoded or
// does not fit alone (tooBig says why).
func (s *Session) jsonChunks(readings []hearth.Reading) (chunks []chunk, tooBig error) {
	var (
		buf     = bytes.NewBufferString(telemetryHead)
		inBuf   = 0
		room    = s.cfg.MaxPayload - len(telemetryHead) - len(telemetryTail)
		encoded = 0
	)
	for i, r := range readings {
		b, err := json.Marshal(r)
		if err != nil {
			tooBig = fmt.Errorf("encode reading seq %d: %w", r.Seq, err)
			break
		}
		if len(b) > room {
			tooBig = fmt.Errorf("reading seq %d is %d bytes: %w", r.Seq, len(b), ErrPayloadTooLarge)
			break
		}
		if inBuf > 0 && buf.Len()+1+len(b)+len(telemetryTail) > s.cfg.MaxPayload {
			buf.WriteString(telemetryTail)
			chunks = append(chunks, chunk{payload: bytes.Clone(buf.Bytes()), end: i})
			buf.Reset()
			buf.WriteString(telemetryHead)
			inBuf = 0
		}
		if inBuf > 0 {
			buf.WriteByte(',')
		}
		buf.Write(b)
		inBuf++
		encoded = i + 1
	}
	if inBuf > 0 {
		buf.WriteString(telemetryTail)
		chunks = append(chunks, chunk{payload: bytes.Clone(buf.Bytes()), end: encoded})
	}
	return chunks, tooBig
}

// leanMaxRows bounds the readings of one lean message before its size is
// looked at: a backlog is split into messages of this many at most.
const leanMaxRows = 1000

// leanChunks encodes readings as lean messages of at most MaxPayload
// bytes, halving a message's readings until it fits.
func (s *Session) leanChunks(readings []hearth.Reading) (chunks []chunk, tooBig error) {
	for i := 0; i < len(readings); {
		n := min(len(readings)-i, leanMaxRows)
		for {
			p := encodeLean(readings[i : i+n])
			if len(p) <= s.cfg.MaxPayload {
				chunks = append(chunks, chunk{payload: p, end: i + n})
				i += n
				break
			}
			if n == 1 {
				return chunks, fmt.Errorf("reading seq %d is %d bytes: %w", readings[i].Seq, len(p), ErrPayloadTooLarge)
			}
			n /= 2
		}
	}
	return chunks, nil
}

// PublishAggregates publishes compacted minutes of readings as
// {"aggregates":[…]} on …/telemetry/backfill, QoS 1, not retained: the
// oldest backlog there is. It fails like Publish.
func (s *Session) PublishAggregates(ctx context.Context, aggs []hearth.Aggregate) error {
	if len(aggs) == 0 {
		return errors.New("uplink: empty aggregate batch")
	}
	b, err := json.Marshal(struct {
		Aggregates []hearth.Aggregate `json:"aggregates"`
	}{aggs})
	if err != nil {
		return fmt.Errorf("encode aggregates: %w", err)
	}
	return s.publish(ctx, s.topics.backfill, b, false)
}

// PublishAck publishes the outcome of one setpoint message on
// …/setpoint/ack, QoS 1, not retained. It fails like Publish.
func (s *Session) PublishAck(ctx context.Context, ack hearth.Ack) error {
	if ack.Result == "" {
		return errors.New("uplink: ack without a result")
	}
	b, err := json.Marshal(ack)
	if err != nil {
		return fmt.Errorf("encode ack: %w", err)
	}
	return s.publish(ctx, s.topics.ack, b, false)
}

// PublishState publishes what the agent is doing on …/state, QoS 1,
// retained, so that the cloud always finds the latest. Call it on every
// change of lease, mode or safety state, and after a reconnect. A zero
// st.Time is stamped now.
func (s *Session) PublishState(ctx context.Context, st hearth.State) error {
	if !st.Mode.Valid() {
		return fmt.Errorf("uplink: state with unknown mode %q", st.Mode)
	}
	if st.Safety == "" {
		return errors.New("uplink: state without a safety state")
	}
	if st.Time.IsZero() {
		st.Time = time.Now()
	}
	st.Time = st.Time.UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return s.publish(ctx, s.topics.state, b, true)
}

// EncodeEvent encodes an event flat, as the contract publishes it:
// {"id":…,"ts":…,"type":…, …Data}. Data must be a JSON object without the
// keys id, ts and type; an event that breaks this returns an error
// wrapping hearth.ErrInvalidEvent.
func EncodeEvent(e hearth.Event) ([]byte, error) {
	b, err := encodeEvent(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", hearth.ErrInvalidEvent, err)
	}
	return b, nil
}

func encodeEvent(e hearth.Event) ([]byte, error) {
	if e.Type == "" {
		return nil, errors.New("event without a type")
	}
	head, err := json.Marshal(struct {
		ID   uint64    `json:"id"`
		Time time.Time `json:"ts"`
		Type string    `json:"type"`
	}{e.ID, e.Time.UTC(), e.Type})
	if err != nil {
		return nil, err
	}
	data := bytes.TrimSpace(e.Data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return head, nil
	}
	if _, rej := checkStrict(data, nil); rej != nil || data[0] != '{' {
		return nil, fmt.Errorf("event %s: data must be a JSON object without duplicate keys", e.Type)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("event %s data: %w", e.Type, err)
	}
	for _, k := range []string{"id", "ts", "type"} {
		if _, ok := fields[k]; ok {
			return nil, fmt.Errorf("event %s: data must not set %q", e.Type, k)
		}
	}
	if len(fields) == 0 {
		return head, nil
	}
	var out bytes.Buffer
	if err := json.Compact(&out, data); err != nil {
		return nil, err
	}
	inner := out.Bytes()[1:] // drop '{'
	return append(append(head[:len(head)-1], ','), inner...), nil
}

// PublishEvent publishes ev on …/event, QoS 1, not retained. It fails like
// Publish, or with an error wrapping hearth.ErrInvalidEvent if ev cannot
// be encoded (retrying that cannot help).
func (s *Session) PublishEvent(ctx context.Context, ev hearth.Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b, err := EncodeEvent(ev)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.topics.event, b, false)
}

// Publish publishes payload to {prefix}/{gateway}/{subtopic} with QoS 1.
// It returns nil only if the broker acknowledged the message on the
// connection it was sent on; ErrNotConnected when the session is down.
// The session's own topics (status, setpoint) are refused.
func (s *Session) Publish(ctx context.Context, subtopic string, payload []byte, retained bool) error {
	if subtopic == "" || strings.ContainsAny(subtopic, "+#") || strings.HasPrefix(subtopic, "/") ||
		strings.HasSuffix(subtopic, "/") || strings.Contains(subtopic, "//") {
		return fmt.Errorf("uplink: bad subtopic %q", subtopic)
	}
	if subtopic == "status" || subtopic == "setpoint" {
		return fmt.Errorf("uplink: subtopic %q is owned by the session", subtopic)
	}
	return s.publish(ctx, s.topics.base+"/"+subtopic, payload, retained)
}

// pending is a message handed to a connection and not yet confirmed.
type pending struct {
	topic string
	tok   paho.Token
	cur   *connection
	gen   uint64
	sent  time.Time
}

// publish sends one QoS 1 message and waits for its PUBACK.
func (s *Session) publish(ctx context.Context, topic string, payload []byte, retained bool) error {
	p, err := s.send(topic, payload, retained)
	if err != nil {
		return err
	}
	return s.confirm(ctx, p)
}

// send hands one QoS 1 message to the current connection.
func (s *Session) send(topic string, payload []byte, retained bool) (*pending, error) {
	if len(payload) > s.cfg.MaxPayload {
		return nil, fmt.Errorf("publish %s: %d bytes: %w", topic, len(payload), ErrPayloadTooLarge)
	}
	s.mu.Lock()
	if s.closed && topic != s.topics.status { // only the offline status may go out while closing
		s.mu.Unlock()
		return nil, ErrClosed
	}
	cur, gen := s.cur, s.gen
	if cur == nil {
		s.stats.NotConnected++
		s.mu.Unlock()
		return nil, ErrNotConnected
	}
	s.mu.Unlock()
	return &pending{topic: topic, tok: cur.client.Publish(topic, 1, retained, payload), cur: cur, gen: gen, sent: time.Now()}, nil
}

// confirm waits for p's PUBACK, at most PublishTimeout from when it was
// sent. paho may complete a token without error for a message it never
// got acknowledged (its token bookkeeping spans reconnects), so success
// also requires that the connection generation did not change meanwhile.
func (s *Session) confirm(ctx context.Context, p *pending) error {
	timer := time.NewTimer(s.cfg.PublishTimeout - time.Since(p.sent))
	defer timer.Stop()
	var err error
	select {
	case <-p.tok.Done():
		if terr := p.tok.Error(); terr != nil {
			err = fmt.Errorf("publish %s: %w: %v", p.topic, ErrNotDelivered, terr)
		}
	case <-p.cur.lost: // paho keeps the token open for a resend that never comes
		err = fmt.Errorf("publish %s: %w", p.topic, ErrNotDelivered)
	case <-ctx.Done():
		err = fmt.Errorf("publish %s: %w", p.topic, ctx.Err())
	case <-timer.C:
		err = fmt.Errorf("publish %s: %w after %v", p.topic, ErrPubackTimeout, s.cfg.PublishTimeout)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && (s.gen != p.gen || s.cur != p.cur) {
		err = fmt.Errorf("publish %s: %w", p.topic, ErrNotDelivered)
	}
	if err != nil {
		s.stats.PublishFailures++
		if errors.Is(err, ErrPubackTimeout) {
			s.stats.PubackTimeouts++
		}
		return err
	}
	s.stats.Published++
	return nil
}

// HandleSetpoints makes the session check every setpoint message with
// ParseSetpoint (keys and revoked as in uplink.setpoint_keys and
// uplink.revoked_keys; no keys means unsigned messages are accepted; the
// gateway is the session's own) and ack it on …/setpoint/ack: a rejection
// at once, anything else with the ack submit returns. submit gets the lease
// and the time the message arrived, and runs on the session's dispatch
// goroutine, one message at a time, so it may block briefly but should not
// wait on the network. Messages the broker delivers after a reconnect,
// queued or retained, take the same path.
//
// An ack that cannot be published is kept (up to 64, oldest dropped and
// counted) and sent after the next connect. HandleSetpoints replaces any
// OnSetpoint handler.
func (s *Session) HandleSetpoints(keys map[string]ed25519.PublicKey, revoked []string, submit func(sp hearth.Setpoint, received time.Time) hearth.Ack) {
	s.SetKeys(keys, revoked)
	s.mu.Lock()
	s.onSetpoint = func(payload []byte, received time.Time) {
		s.mu.Lock()
		tr := s.trust
		tr.KeysRequired = s.keysRequired
		s.mu.Unlock()
		sp, rej := ParseSetpoint(payload, tr, s.cfg.MaxSetpointBytes)
		var ack hearth.Ack
		if rej != nil {
			s.mu.Lock()
			s.stats.SetpointsRejected++
			s.mu.Unlock()
			s.log.Warn("setpoint rejected", "id", rej.ID, "version", rej.Version, "reason", rej.Reason, "detail", rej.Detail)
			ack = rej.Ack()
		} else {
			ack = submit(sp, received)
			if ack.ID == "" && ack.Version == 0 {
				ack.ID, ack.Version = sp.ID, sp.Version
			}
			if ack.Result == "" {
				ack.Result, ack.Reason = hearth.ResultRejected, hearth.ReasonNoResult
			}
			s.log.Info("setpoint", "id", ack.ID, "version", ack.Version, "result", ack.Result, "reason", ack.Reason)
		}
		s.sendAck(ack)
	}
	s.mu.Unlock()
}

// SetKeys replaces the keys setpoints are checked with, from the next
// message on: for a key rotation or revocation without a restart.
func (s *Session) SetKeys(keys map[string]ed25519.PublicKey, revoked []string) {
	tr := Trust{Gateway: s.cfg.GatewayID, Keys: cloneKeys(keys), Revoked: slices.Clone(revoked)}
	s.mu.Lock()
	s.trust = tr
	s.mu.Unlock()
}

// RequireKeys says whether an empty key set refuses every setpoint
// (Trust.KeysRequired) rather than accepting unsigned ones, from the next
// message on.
func (s *Session) RequireKeys(on bool) {
	s.mu.Lock()
	s.keysRequired = on
	s.mu.Unlock()
}

func cloneKeys(keys map[string]ed25519.PublicKey) map[string]ed25519.PublicKey {
	out := make(map[string]ed25519.PublicKey, len(keys))
	for id, k := range keys {
		out[id] = bytes.Clone(k)
	}
	return out
}

// sendAck publishes ack, or keeps it for the next connection.
func (s *Session) sendAck(ack hearth.Ack) {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	if s.flushAcksLocked(ctx) {
		if err := s.PublishAck(ctx, ack); err == nil {
			return
		} else {
			s.log.Warn("setpoint ack not confirmed; kept for the next connection", "id", ack.ID, "err", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.acks) >= maxPendingAcks {
		s.acks = s.acks[1:]
		s.stats.AcksDropped++
	}
	s.acks = append(s.acks, ack)
	s.stats.AcksPending = len(s.acks)
}

// flushAcks publishes kept acks, oldest first, and reports whether none is
// left.
func (s *Session) flushAcks(ctx context.Context) bool {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	return s.flushAcksLocked(ctx)
}

func (s *Session) flushAcksLocked(ctx context.Context) bool {
	for {
		s.mu.Lock()
		if len(s.acks) == 0 {
			s.mu.Unlock()
			return true
		}
		ack := s.acks[0]
		s.mu.Unlock()
		if err := s.PublishAck(ctx, ack); err != nil {
			return false
		}
		s.mu.Lock()
		s.acks = s.acks[1:] // only flushAcksLocked removes, under ackMu
		s.stats.AcksPending = len(s.acks)
		s.mu.Unlock()
	}
}
