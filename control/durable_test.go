package control

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/safety"
)

// failingStore is a Store in memory whose writes fail while full is set,
// as a state file on a full or read-only disk does.
type failingStore struct {
	mu   sync.Mutex
	m    map[string]string
	full bool
}

func (s *failingStore) Meta(key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok, nil
}

func (s *failingStore) SetMeta(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		return errors.New("no space left on device")
	}
	s.m[key] = value
	return nil
}

// idleDevice takes every command and holds nothing: the lease checks
// need a controllable device, not its physics.
type idleDevice struct{}

func (idleDevice) Name() string { return "battery" }
func (idleDevice) Apply(context.Context, safety.Approved) (Readback, error) {
	return Readback{}, nil
}
func (idleDevice) RevertTimeout() time.Duration { return time.Minute }

// TestLeaseNotDurableIsRefused: a lease whose version cannot be written is
// refused (not_durable) and changes nothing; once the store takes writes,
// the same version is accepted, and a restart remembers it.
func TestLeaseNotDurableIsRefused(t *testing.T) {
	t.Parallel()
	st := &failingStore{m: map[string]string{}}
	now := time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)
	opt := Options{Limits: testSafetyLimits(), Store: st, Devices: []Device{idleDevice{}}, Event: func(string, map[string]any) {},
		Now: func() hearth.Instant { return hearth.Instant{Wall: now, Mono: time.Second} }}
	c, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	st.full = true
	in := hearth.Instant{Wall: now, Mono: time.Second}
	if ack := c.Submit(lease(3, now, time.Hour, hearth.ModeIdle, 0), in); ack.Result != hearth.ResultRejected || ack.Reason != hearth.ReasonNotDurable {
		t.Fatalf("full store: ack %+v, want rejected, not_durable", ack)
	}
	if _, ok := c.Lease(); ok || c.HighestVersion() != 0 {
		t.Fatalf("a refused lease runs (%v) or moved the version to %d", ok, c.HighestVersion())
	}
	st.full = false
	if ack := c.Submit(lease(3, now, time.Hour, hearth.ModeIdle, 0), in); ack.Result != hearth.ResultApplied {
		t.Fatalf("store writable again: ack %+v, want applied", ack)
	}
	c2, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	if c2.HighestVersion() != 3 {
		t.Errorf("after a restart the highest version is %d, want 3", c2.HighestVersion())
	}
}
