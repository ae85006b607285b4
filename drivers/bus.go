// Package drivers talks to devices: Modbus transports and the goroutine that
// owns each physical link, register decoding, SunSpec discovery and device
// profiles. The simulator lives in drivers/sim.
//
// No other package sees the Modbus library's types.
package drivers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/goburrow/modbus"

	"github.com/hearth-energy/hearth"
)

// Table is a Modbus register table.
type Table string

// Register tables.
const (
	Holding Table = "holding"
	Input   Table = "input"
)

// MaxReadRegisters is the most registers one Modbus read may ask for.
const MaxReadRegisters = 125

// MaxWriteRegisters is the most registers one Modbus write may carry.
const MaxWriteRegisters = 123

// ErrBusClosed is returned for requests made after Close.
var ErrBusClosed = errors.New("bus closed")

// ErrUnitDown is returned, without touching the link, for a request to a
// unit that stopped answering and is not yet due for its next probe.
var ErrUnitDown = errors.New("unit not answering; next probe pending")

// Defaults for zero LinkConfig fields.
const (
	DefaultTimeout    = time.Second
	DefaultMaxBackoff = 30 * time.Second
	// DefaultRetries is how many times a config's device repeats a failed
	// request before it is marked down, when the file does not say.
	DefaultRetries = 2
	// retryBase is the first pause before a retry; each retry doubles it,
	// with full jitter, up to retryCap.
	retryBase = 50 * time.Millisecond
	retryCap  = time.Second
	// probeBase is the first pause before probing a unit marked down.
	probeBase = time.Second
)

// LinkConfig describes one physical link: a TCP connection, a serial line,
// or a TCP socket to a serial gateway.
type LinkConfig struct {
	Transport string // tcp, rtu or rtu-over-tcp
	Address   string // host:port, or a serial device path for rtu
	// Serial line settings for rtu; zero values take 9600 8N1.
	Baud     int
	Parity   string
	StopBits int
	// Timeout bounds one whole request (connect, send, receive) to a unit
	// with no timeout of its own.
	Timeout time.Duration
	// Gap is the pause between two requests on the link, for devices that
	// need quiet time between frames. An RTU line always keeps at least
	// the 3.5-character silence between frames.
	Gap time.Duration
	// Retries is how many times a failed request is repeated before the
	// unit is marked down, for units with no setting of their own.
	Retries int
	// DownAfter is how many attempts in a row must fail before a unit is
	// marked down; 0 means one request with all its retries.
	DownAfter int
	// MaxBackoff caps the pause between probes of a unit marked down.
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// Validate checks a link's settings as a config file gives them, with
// defaults applied: every problem is a hearth.FieldError named by its
// config key (transport, address, baud, parity, stop_bits, timeout,
// retries, max_backoff, inter_request_gap). It opens nothing.
func (c LinkConfig) Validate() error {
	var errs hearth.FieldErrors
	switch c.Transport {
	case TransportTCP, TransportRTUOverTCP:
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			errs.Add("address", "want host:port for transport %s, got %q", c.Transport, c.Address)
		}
	case TransportRTU:
		if !strings.HasPrefix(c.Address, "/") {
			errs.Add("address", "want a serial device path such as /dev/ttyUSB0 for transport rtu, got %q", c.Address)
		}
	default:
		errs.Add("transport", "%q is not one of tcp, rtu, rtu-over-tcp", c.Transport)
	}
	switch c.Baud {
	case 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200:
	default:
		errs.Add("baud", "%d is not a standard baud rate", c.Baud)
	}
	switch c.Parity {
	case "N", "E", "O":
	default:
		errs.Add("parity", "%q is not one of N, E, O", c.Parity)
	}
	if c.StopBits != 1 && c.StopBits != 2 {
		errs.Add("stop_bits", "%d is not 1 or 2", c.StopBits)
	}
	if c.Timeout < 10*time.Millisecond || c.Timeout > time.Minute {
		errs.Add("timeout", "%s is outside 10ms..1m", c.Timeout)
	}
	if c.Retries < 0 || c.Retries > 5 {
		errs.Add("retries", "%d is outside 0..5", c.Retries)
	}
	if c.MaxBackoff < time.Second || c.MaxBackoff > time.Hour {
		errs.Add("max_backoff", "%s is outside 1s..1h", c.MaxBackoff)
	}
	if c.Gap < 0 || c.Gap > 10*time.Second {
		errs.Add("inter_request_gap", "%s is outside 0..10s", c.Gap)
	}
	return errs.Err()
}

// UnitConfig is how the bus treats one unit on it.
type UnitConfig struct {
	Timeout time.Duration // 0: the link's
	Retries int           // negative: the link's
}

// Bus owns one physical link. A single goroutine serialises every request
// to every unit on it, so devices sharing a link never collide. After any
// error the connection is closed and redialled (a serial line is drained),
// so a late reply can never be taken for the answer to a later request.
//
// A unit whose request fails even after its retries is marked down: later
// requests to it fail at once with ErrUnitDown, and only one request per
// back-off period (doubling, capped at MaxBackoff, with jitter) reaches the
// link as a probe. A dead unit thus costs the link one timeout per period
// and the other units keep their poll rate.
type Bus struct {
	cfg  LinkConfig
	reqs chan *request
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	log  *slog.Logger
	tr   transport

	mu    sync.Mutex // guards stats and units
	stats BusStats
	units map[uint8]*unitState
}

// BusStats counts what happened on a link.
type BusStats struct {
	Requests  uint64 `json:"requests"` // exchanges attempted on the link
	Errors    uint64 `json:"errors"`   // exchanges that failed (exceptions are answers, not errors)
	Redials   uint64 `json:"redials"`  // connections or lines reopened after the first
	Stale     uint64 `json:"stale"`    // late or repeated replies discarded
	LastError string `json:"last_error,omitempty"`
}

// UnitStats counts what happened to one unit on a link.
type UnitStats struct {
	OK         uint64    `json:"ok"`         // requests answered with data
	Exceptions uint64    `json:"exceptions"` // requests answered with an exception
	Failures   uint64    `json:"failures"`   // attempts that got no valid answer
	Skipped    uint64    `json:"skipped"`    // requests refused with ErrUnitDown
	Down       bool      `json:"down"`
	NextProbe  time.Time `json:"next_probe,omitzero"`
}

type unitState struct {
	cfg     UnitConfig
	stats   UnitStats
	backoff time.Duration
	failed  int   // attempts failed in a row
	lastErr error // of the last failed attempt, while down
}

// UnitDownError is what a request to a unit marked down gets without
// touching the link: it matches ErrUnitDown, and wraps the error of the
// last attempt that failed, so that the cause (a refused connection, no
// reply) stays visible while the link waits to probe again.
type UnitDownError struct{ Last error }

func (e *UnitDownError) Error() string {
	if e.Last == nil {
		return ErrUnitDown.Error()
	}
	return fmt.Sprintf("%v (last: %v)", ErrUnitDown, e.Last)
}

func (e *UnitDownError) Unwrap() []error {
	if e.Last == nil {
		return []error{ErrUnitDown}
	}
	return []error{ErrUnitDown, e.Last}
}

type request struct {
	ctx     context.Context
	unit    uint8
	attempt int
	// once marks a single attempt that leaves the unit's down state and
	// back-off alone (a scan); timeout, when set, replaces the unit's.
	once    bool
	timeout time.Duration
	do      func(modbus.Client) ([]byte, error)
	result  chan result
}

type result struct {
	data    []byte
	err     error
	retryIn time.Duration // > 0: the caller should try again after this pause
}

// OpenBus starts the owner goroutine of a link. It does not dial: the first
// request does, so a dead device never blocks start-up.
func OpenBus(cfg LinkConfig) (*Bus, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.Retries = max(cfg.Retries, 0)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tr, err := newTransport(cfg)
	if err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, reqs: make(chan *request), done: make(chan struct{}), log: cfg.Logger,
		tr: tr, units: map[uint8]*unitState{}}
	b.wg.Add(1)
	go b.run()
	return b, nil
}

// Close stops the owner goroutine and closes the link. Requests in flight
// finish first; later ones get ErrBusClosed.
func (b *Bus) Close() error {
	b.once.Do(func() { close(b.done) })
	b.wg.Wait()
	return nil
}

// ConfigureUnit sets how the bus treats unit: its timeout and retries.
func (b *Bus) ConfigureUnit(unit uint8, c UnitConfig) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unitLocked(unit).cfg = c
}

func (b *Bus) unitLocked(unit uint8) *unitState {
	u, ok := b.units[unit]
	if !ok {
		u = &unitState{cfg: UnitConfig{Retries: -1}}
		b.units[unit] = u
	}
	return u
}

// Stats returns the link's counters.
func (b *Bus) Stats() BusStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// UnitStats returns one unit's counters.
func (b *Bus) UnitStats(unit uint8) UnitStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if u, ok := b.units[unit]; ok {
		return u.stats
	}
	return UnitStats{}
}

// Units returns the counters of every unit the link has been asked about.
func (b *Bus) Units() map[uint8]UnitStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[uint8]UnitStats, len(b.units))
	for id, u := range b.units {
		out[id] = u.stats
	}
	return out
}

func (b *Bus) run() {
	defer b.wg.Done()
	defer b.tr.close()
	var last time.Time
	for {
		select {
		case <-b.done:
			return
		case r := <-b.reqs:
			r.result <- b.serve(r, &last)
		}
	}
}

// serve runs one attempt of a request in the owner goroutine.
func (b *Bus) serve(r *request, last *time.Time) result {
	if err := r.ctx.Err(); err != nil {
		return result{err: err}
	}
	b.mu.Lock()
	u := b.unitLocked(r.unit)
	timeout, retries := u.cfg.Timeout, u.cfg.Retries
	if timeout <= 0 {
		timeout = b.cfg.Timeout
	}
	if retries < 0 {
		retries = b.cfg.Retries
	}
	if r.timeout > 0 {
		timeout = r.timeout
	}
	down := u.stats.Down
	if down && !r.once && time.Now().Before(u.stats.NextProbe) {
		u.stats.Skipped++
		last := u.lastErr
		b.mu.Unlock()
		return result{err: &UnitDownError{Last: last}}
	}
	b.mu.Unlock()

	if wait := time.Until(last.Add(max(b.cfg.Gap, b.tr.frameGap()))); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-b.done:
			t.Stop()
			return result{err: ErrBusClosed}
		case <-r.ctx.Done():
			t.Stop()
			return result{err: r.ctx.Err()}
		}
	}
	deadline := time.Now().Add(timeout)
	if d, ok := r.ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	b.tr.prepare(r.unit, deadline)
	data, err := r.do(b.tr.client())
	*last = time.Now()
	err = classify(err)
	var exc *ExceptionError
	isExc := errors.As(err, &exc)
	if err != nil && !isExc {
		// The stream may hold a late or partial reply: start afresh.
		b.tr.reset()
	}
	redials, stale := b.tr.counters()

	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Requests++
	b.stats.Redials, b.stats.Stale = redials, stale
	res := result{data: data, err: err}
	switch {
	case r.once:
		switch {
		case isExc:
			u.stats.Exceptions++
		case err == nil:
			u.stats.OK++
		default:
			b.stats.Errors++
			b.stats.LastError = err.Error()
			u.stats.Failures++
		}
	case err == nil || isExc:
		if isExc {
			u.stats.Exceptions++
		} else {
			u.stats.OK++
		}
		if u.stats.Down {
			b.log.Info("unit answering again", "unit", r.unit)
		}
		u.stats.Down, u.stats.NextProbe, u.backoff, u.failed, u.lastErr = false, time.Time{}, 0, 0, nil
	default:
		b.stats.Errors++
		b.stats.LastError = err.Error()
		u.stats.Failures++
		u.failed++
		u.lastErr = err
		downAfter := b.cfg.DownAfter
		if downAfter <= 0 {
			downAfter = 1 + retries
		}
		switch {
		case down:
			// A probe failed: wait longer before the next.
			u.backoff = min(2*u.backoff, b.cfg.MaxBackoff)
			u.stats.NextProbe = time.Now().Add(jitter(u.backoff))
		case u.failed < downAfter && r.attempt < retries && r.ctx.Err() == nil:
			res.retryIn = rand.N(min(retryBase<<r.attempt, retryCap)) + time.Millisecond
		case u.failed < downAfter:
			// Failed, but not often enough in a row to give up on the unit.
		default:
			u.stats.Down = true
			u.backoff = min(max(probeBase, timeout), b.cfg.MaxBackoff)
			u.stats.NextProbe = time.Now().Add(jitter(u.backoff))
			b.log.Warn("unit not answering, marked down", "unit", r.unit, "err", err)
		}
	}
	return res
}

// jitter spreads d over [d/2, d], so units and gateways that failed
// together do not probe together.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func (b *Bus) submit(ctx context.Context, unit uint8, do func(modbus.Client) ([]byte, error)) ([]byte, error) {
	return b.submitWith(ctx, &request{unit: unit, do: do})
}

// submitWith sends proto's request to the owner, repeating it while the
// owner asks for a retry.
func (b *Bus) submitWith(ctx context.Context, proto *request) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		r := &request{ctx: ctx, unit: proto.unit, attempt: attempt, once: proto.once, timeout: proto.timeout,
			do: proto.do, result: make(chan result, 1)}
		select {
		case b.reqs <- r:
		case <-b.done:
			return nil, ErrBusClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// The owner always answers a request it took.
		res := <-r.result
		if res.retryIn <= 0 {
			return res.data, res.err
		}
		// Wait outside the owner, so other units use the link meanwhile.
		t := time.NewTimer(res.retryIn)
		select {
		case <-t.C:
		case <-b.done:
			t.Stop()
			return nil, res.err
		case <-ctx.Done():
			t.Stop()
			return nil, res.err
		}
	}
}

// ExceptionError is a Modbus exception response: the unit answered and
// refused the request.
type ExceptionError struct {
	Function byte // the request's function code
	Code     byte // the exception code
}

func (e *ExceptionError) Error() string {
	name := map[byte]string{1: "illegal function", 2: "illegal data address", 3: "illegal data value",
		4: "server device failure", 5: "acknowledge", 6: "server device busy", 8: "memory parity error",
		10: "gateway path unavailable", 11: "gateway target failed to respond"}[e.Code]
	if name == "" {
		name = "unknown"
	}
	return fmt.Sprintf("exception %d (%s) to function 0x%02x", e.Code, name, e.Function)
}

// ErrTimeout is matched (errors.Is) by requests that got no complete answer
// in time.
var ErrTimeout = os.ErrDeadlineExceeded

// classify turns the library's errors into the package's own.
func classify(err error) error {
	var me *modbus.ModbusError
	if errors.As(err, &me) {
		return &ExceptionError{Function: me.FunctionCode &^ 0x80, Code: me.ExceptionCode}
	}
	return err
}

// ProbeNow makes the next request to a unit marked down its probe, at
// once, instead of at its backed-off NextProbe; it reports whether the
// unit was down. A unit that is up is left alone.
func (b *Bus) ProbeNow(unit uint8) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.unitLocked(unit)
	if !u.stats.Down {
		return false
	}
	u.stats.NextProbe = time.Now()
	return true
}

// Read reads count registers from a unit's table starting at addr.
func (b *Bus) Read(ctx context.Context, unit uint8, table Table, addr, count uint16) ([]uint16, error) {
	return b.read(ctx, &request{unit: unit}, table, addr, count)
}

// ReadOnce reads as Read does, in a single attempt bounded by timeout (0:
// the unit's), without retries and without marking the unit down when it
// fails, and even when it is marked down: a scan's question whether
// anything answers at unit, which must not change how the unit is polled.
func (b *Bus) ReadOnce(ctx context.Context, unit uint8, table Table, addr, count uint16, timeout time.Duration) ([]uint16, error) {
	return b.read(ctx, &request{unit: unit, once: true, timeout: timeout}, table, addr, count)
}

func (b *Bus) read(ctx context.Context, proto *request, table Table, addr, count uint16) ([]uint16, error) {
	unit := proto.unit
	if count == 0 || count > MaxReadRegisters {
		return nil, fmt.Errorf("read %d registers: count must be 1..%d", count, MaxReadRegisters)
	}
	proto.do = func(c modbus.Client) ([]byte, error) {
		var data []byte
		var err error
		if table == Input {
			data, err = c.ReadInputRegisters(addr, count)
		} else {
			data, err = c.ReadHoldingRegisters(addr, count)
		}
		if err == nil && len(data) != 2*int(count) {
			err = fmt.Errorf("got %d bytes, want %d", len(data), 2*count)
		}
		return data, err
	}
	data, err := b.submitWith(ctx, proto)
	if err != nil {
		return nil, fmt.Errorf("read unit %d %s %d+%d: %w", unit, table, addr, count, err)
	}
	regs := make([]uint16, count)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(data[2*i:])
	}
	return regs, nil
}

// write writes holding registers. It is unexported: device writes go through
// the methods that take a safety.Approved value.
func (b *Bus) write(ctx context.Context, unit uint8, addr uint16, values []uint16) error {
	if len(values) == 0 || len(values) > MaxWriteRegisters {
		return fmt.Errorf("write %d registers: count must be 1..%d", len(values), MaxWriteRegisters)
	}
	buf := make([]byte, 2*len(values))
	for i, v := range values {
		binary.BigEndian.PutUint16(buf[2*i:], v)
	}
	_, err := b.submit(ctx, unit, func(c modbus.Client) ([]byte, error) {
		return c.WriteMultipleRegisters(addr, uint16(len(values)), buf)
	})
	if err != nil {
		return fmt.Errorf("write unit %d holding %d+%d: %w", unit, addr, len(values), err)
	}
	return nil
}
