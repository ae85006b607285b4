// Package serial opens serial lines (RS-485 adapters, and pseudo-terminals
// in tests) as *os.File values whose reads and writes honour deadlines, so
// a Modbus RTU transaction can be bounded as a whole. It is used by the
// drivers' RTU transport and by the simulator's RTU front end.
package serial

import (
	"errors"
	"fmt"
	"os"
)

// Config is a line's settings. Zero fields take 9600 baud, no parity and
// one stop bit, eight data bits always.
type Config struct {
	Baud     int
	Parity   string // "N", "E" or "O"
	StopBits int    // 1 or 2
}

func (c Config) withDefaults() Config {
	if c.Baud == 0 {
		c.Baud = 9600
	}
	if c.Parity == "" {
		c.Parity = "N"
	}
	if c.StopBits == 0 {
		c.StopBits = 1
	}
	return c
}

// ErrUnsupported is returned on platforms where serial lines are not
// supported.
var ErrUnsupported = errors.New("serial lines are supported on Linux only")

// Open opens the serial device at path in raw mode with cfg's settings.
// The returned file is non-blocking underneath, so SetReadDeadline and
// Close interrupt a pending read. The caller owns the file.
func Open(path string, cfg Config) (*os.File, error) {
	cfg = cfg.withDefaults()
	switch cfg.Parity {
	case "N", "E", "O":
	default:
		return nil, fmt.Errorf("serial %s: parity %q is not N, E or O", path, cfg.Parity)
	}
	if cfg.StopBits != 1 && cfg.StopBits != 2 {
		return nil, fmt.Errorf("serial %s: %d stop bits, want 1 or 2", path, cfg.StopBits)
	}
	f, err := open(path, cfg)
	if err != nil {
		return nil, fmt.Errorf("serial %s: %w", path, err)
	}
	return f, nil
}
