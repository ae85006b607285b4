package uplink

import (
	"math/rand/v2"
	"time"
)

// backoff returns the delay before retry n (0 for the first retry): a
// uniformly random duration in [0, min(max, base·2^n)]. Full jitter spreads
// a fleet's reconnects evenly over the window instead of bunching them at
// its edge, which is what keeps a restarted broker from being flattened.
func backoff(n int, base, max time.Duration, r *rand.Rand) time.Duration {
	ceil := max
	if n < 0 {
		n = 0
	}
	if n < 63 && base <= max>>n {
		ceil = base << n
	}
	if ceil <= 0 {
		return 0
	}
	return time.Duration(r.Int64N(int64(ceil) + 1))
}
