package uplink

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffBoundsAndJitter(t *testing.T) {
	base, max := time.Second, 2*time.Minute
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 40 {
		ceil := max
		if n < 8 { // 1s·2^7 = 128s > 2m
			ceil = base << n
		}
		seen := map[time.Duration]bool{}
		var top time.Duration
		for range 200 {
			d := backoff(n, base, max, r)
			if d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want within [0, %v]", n, d, ceil)
			}
			seen[d] = true
			top = maxDur(top, d)
		}
		if len(seen) < 100 {
			t.Errorf("backoff(%d): only %d distinct values in 200, want jitter", n, len(seen))
		}
		// Full jitter over the whole window: the largest of 200 draws is
		// near the ceiling (fails with probability 0.5^200).
		if top < ceil/2 {
			t.Errorf("backoff(%d): max of 200 draws %v, want above %v", n, top, ceil/2)
		}
	}
}

func TestBackoffGrows(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	mean := func(n int) time.Duration {
		var sum time.Duration
		for range 1000 {
			sum += backoff(n, 100*time.Millisecond, time.Hour, r)
		}
		return sum / 1000
	}
	prev := mean(0)
	for n := 1; n < 6; n++ {
		m := mean(n)
		if m < prev*3/2 {
			t.Errorf("mean backoff(%d) = %v, not growing from backoff(%d) = %v", n, m, n-1, prev)
		}
		prev = m
	}
}

func TestBackoffHugeAttemptDoesNotOverflow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{62, 63, 64, 1000, -1} {
		d := backoff(n, time.Second, time.Minute, r)
		if d < 0 || d > time.Minute {
			t.Errorf("backoff(%d) = %v, want within [0, 1m]", n, d)
		}
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}
