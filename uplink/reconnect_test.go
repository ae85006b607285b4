package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

var retryLine = regexp.MustCompile(`msg="mqtt connect failed".* attempt=(\d+) retry_in=(\S+)`)

// TestReconnectDelaysLoggedGrowAndJitter reads the delays a session logs
// while no broker listens: each within its capped exponential window, the
// windows growing, the draws jittered. The boot delay is logged before
// the first attempt and bounded by BootDelayMax.
func TestReconnectDelaysLoggedGrowAndJitter(t *testing.T) {
	t.Parallel()
	const base, max, bootMax = 4 * time.Millisecond, 64 * time.Millisecond, 30 * time.Millisecond
	var logs syncBuffer
	port := harness.FreePort(t) // nothing listens here
	s, err := New(Config{
		Broker: fmt.Sprintf("tcp://127.0.0.1:%d", port), GatewayID: "gw-backoff",
		BackoffMin: base, BackoffMax: max, BootDelayMax: bootMax,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	const n = 12
	waitUntil(t, "attempts", func() bool { return len(retryLine.FindAllStringSubmatch(logs.String(), -1)) >= n })
	cctx, ccancel := context.WithTimeout(context.Background(), wait)
	defer ccancel()
	s.Close(cctx)

	out := logs.String()
	boot := regexp.MustCompile(`msg="mqtt boot delay".* delay=(\S+)`).FindStringSubmatch(out)
	if boot == nil {
		t.Fatalf("no boot delay logged:\n%s", out)
	}
	if d, err := time.ParseDuration(boot[1]); err != nil || d < 0 || d > bootMax {
		t.Errorf("boot delay %s, want within [0, %v]", boot[1], bootMax)
	}
	if bi, ai := regexp.MustCompile(`mqtt boot delay`).FindStringIndex(out), retryLine.FindStringIndex(out); bi[0] > ai[0] {
		t.Error("first connect attempt logged before the boot delay")
	}

	distinct := map[time.Duration]bool{}
	aboveFirstWindow := 0
	for i, m := range retryLine.FindAllStringSubmatch(out, -1)[:n] {
		attempt, _ := strconv.Atoi(m[1])
		d, err := time.ParseDuration(m[2])
		if err != nil || attempt != i+1 {
			t.Fatalf("log line %d: attempt %s retry_in %s", i, m[1], m[2])
		}
		ceil := min(max, base<<(attempt-1))
		if d < 0 || d > ceil {
			t.Errorf("attempt %d: retry_in %v outside [0, %v]", attempt, d, ceil)
		}
		if d > base {
			aboveFirstWindow++
		}
		distinct[d] = true
		t.Logf("attempt %2d: window %v, waited %v", attempt, ceil, d)
	}
	// Later windows are 16× the first: with full jitter, the chance that
	// none of 8 draws leaves the first window is (1/16)^8.
	if aboveFirstWindow == 0 {
		t.Error("no delay beyond the first window: delays do not grow")
	}
	if len(distinct) < n-1 {
		t.Errorf("%d distinct delays in %d attempts: not jittered", len(distinct), n)
	}
}

// TestReconnectCutsTheBootDelayAndTheBackoff: while the session waits out
// a long boot delay, Stats says until when and Reconnect connects at once;
// after losing the broker, Stats shows the next attempt, and Reconnect
// skips the rest of the backoff once the broker is back.
func TestReconnectCutsTheBootDelayAndTheBackoff(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	s, err := New(Config{
		Broker: m.URL(), GatewayID: "gw-reconnect", BootDelayMax: time.Hour,
		BackoffMin: time.Hour, BackoffMax: time.Hour, // only Reconnect can make it retry
	})
	if err != nil {
		t.Fatal(err)
	}
	// Delays are uniform in [0, 1h]; one under a minute could pass while
	// the test looks. A generator whose first draws are all longer makes
	// every wait real.
	s.rng = drawsAbove(time.Minute, time.Hour, 8)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), wait)
		defer ccancel()
		s.Close(cctx)
	}()
	waitUntil(t, "boot delay reported", func() bool { return !s.Stats().BootDelayUntil.IsZero() })
	st := s.Stats()
	if st.Connected || st.Attempts != 0 || !st.NextAttempt.Equal(st.BootDelayUntil) || time.Until(st.BootDelayUntil) < time.Minute {
		t.Fatalf("in the boot delay: %+v; want no attempt yet and the next one due at its end, over a minute away", st)
	}
	if !s.Reconnect() {
		t.Error("Reconnect during the boot delay reported no wait")
	}
	waitConnected(t, s)
	if st := s.Stats(); !st.BootDelayUntil.IsZero() || !st.NextAttempt.IsZero() || st.Attempts != 1 {
		t.Errorf("connected: %+v; want no delay nor next attempt, one attempt", st)
	}
	if s.Reconnect() {
		t.Error("Reconnect while connected reported a wait")
	}

	m.Stop()
	waitUntil(t, "next attempt reported", func() bool { return !s.Stats().NextAttempt.IsZero() })
	if st := s.Stats(); st.Connected || time.Until(st.NextAttempt) < time.Minute || !st.BootDelayUntil.IsZero() {
		t.Errorf("after the loss: %+v; want down, the next attempt over a minute away, no boot delay", st)
	}
	m.Start()
	s.Reconnect()
	waitConnected(t, s)
}

// drawsAbove returns a generator whose first n delays drawn in [0, window]
// (as jitter and backoff draw them) all exceed min.
func drawsAbove(min, window time.Duration, n int) *rand.Rand {
	for seed := uint64(1); ; seed++ {
		r, ok := rand.New(rand.NewPCG(seed, seed)), true
		for i := 0; i < n && ok; i++ {
			ok = time.Duration(r.Int64N(int64(window)+1)) > min
		}
		if ok {
			return rand.New(rand.NewPCG(seed, seed))
		}
	}
}
