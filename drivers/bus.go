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
	"sync"
	"time"

	"github.com/goburrow/modbus"
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

// LinkConfig describes one physical link: a TCP connection or a serial line.
type LinkConfig struct {
	Transport string // tcp (rtu and rtu-over-tcp come with the drivers issue)
	Address   string
	Timeout   time.Duration
	// Gap is the pause between two requests on the link, for devices that
	// need quiet time between frames.
	Gap    time.Duration
	Logger *slog.Logger
}

// Bus owns one physical link. A single goroutine serialises every request
// to every unit on it, so devices sharing a link never collide. After any
// error the connection is closed and redialled on the next request, so a
// late reply can never be taken for the answer to a later request.
type Bus struct {
	cfg     LinkConfig
	reqs    chan *request
	done    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once
	log     *slog.Logger

	statsMu sync.Mutex
	stats   BusStats
}

// BusStats counts what happened on a link.
type BusStats struct {
	Requests  uint64
	Errors    uint64
	Redials   uint64
	LastError string
}

type request struct {
	ctx    context.Context
	unit   uint8
	do     func(modbus.Client) ([]byte, error)
	result chan result
}

type result struct {
	data []byte
	err  error
}

// OpenBus starts the owner goroutine of a link. It does not dial: the first
// request does, so a dead device never blocks start-up.
func OpenBus(cfg LinkConfig) (*Bus, error) {
	if cfg.Transport != "tcp" {
		return nil, fmt.Errorf("transport %q is not supported yet", cfg.Transport)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Bus{cfg: cfg, reqs: make(chan *request), done: make(chan struct{}), log: cfg.Logger}
	b.wg.Add(1)
	go b.run()
	return b, nil
}

// Close stops the owner goroutine and closes the link. Requests in flight
// finish first; later ones get ErrBusClosed.
func (b *Bus) Close() error {
	b.closeMu.Do(func() { close(b.done) })
	b.wg.Wait()
	return nil
}

// Stats returns the link's counters.
func (b *Bus) Stats() BusStats {
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	return b.stats
}

func (b *Bus) run() {
	defer b.wg.Done()
	h := modbus.NewTCPClientHandler(b.cfg.Address)
	h.Timeout = b.cfg.Timeout
	h.IdleTimeout = time.Minute
	client := modbus.NewClient(h)
	defer h.Close()
	var last time.Time
	for {
		select {
		case <-b.done:
			return
		case r := <-b.reqs:
			if err := r.ctx.Err(); err != nil {
				r.result <- result{err: err}
				continue
			}
			if wait := b.cfg.Gap - time.Since(last); wait > 0 {
				time.Sleep(wait)
			}
			h.SlaveId = r.unit
			data, err := r.do(client)
			last = time.Now()
			b.statsMu.Lock()
			b.stats.Requests++
			if err != nil {
				b.stats.Errors++
				b.stats.Redials++
				b.stats.LastError = err.Error()
			}
			b.statsMu.Unlock()
			if err != nil {
				// The stream may hold a late or partial reply: start afresh.
				h.Close()
			}
			r.result <- result{data: data, err: err}
		}
	}
}

func (b *Bus) submit(ctx context.Context, unit uint8, do func(modbus.Client) ([]byte, error)) ([]byte, error) {
	r := &request{ctx: ctx, unit: unit, do: do, result: make(chan result, 1)}
	select {
	case b.reqs <- r:
	case <-b.done:
		return nil, ErrBusClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The owner always answers a request it took.
	res := <-r.result
	return res.data, res.err
}

// Read reads count registers from a unit's table starting at addr.
func (b *Bus) Read(ctx context.Context, unit uint8, table Table, addr, count uint16) ([]uint16, error) {
	if count == 0 || count > MaxReadRegisters {
		return nil, fmt.Errorf("read %d registers: count must be 1..%d", count, MaxReadRegisters)
	}
	data, err := b.submit(ctx, unit, func(c modbus.Client) ([]byte, error) {
		if table == Input {
			return c.ReadInputRegisters(addr, count)
		}
		return c.ReadHoldingRegisters(addr, count)
	})
	if err != nil {
		return nil, fmt.Errorf("read unit %d %s %d+%d: %w", unit, table, addr, count, err)
	}
	if len(data) != 2*int(count) {
		return nil, fmt.Errorf("read unit %d %s %d+%d: got %d bytes, want %d", unit, table, addr, count, len(data), 2*count)
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
