package drivers

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
)

// TestIdentityWhilePolling reads a device's identity and model chain from
// other goroutines while its poll goroutine discovers and rediscovers it,
// as the birth record and the diagnostics API do. Under -race this fails
// if discovery writes them unguarded.
func TestIdentityWhilePolling(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{Serial: "RACE-1"})
	bus, err := OpenBus(serveSims(t, TransportTCP, s))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	serials := map[string]bool{}
	var mu sync.Mutex
	for i := 0; i < 5; i++ {
		d := NewSunSpecDevice("battery", bus, 1) // discovers on its first poll
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for ctx.Err() == nil {
				id := d.Identity()
				_ = d.Models()
				mu.Lock()
				serials[id.Serial] = true
				mu.Unlock()
			}
		})
		_, err := d.Poll(context.Background(), time.Now)
		for !serialSeen(&mu, serials) && err == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("poll %d: %v", i, err)
		}
	}
	if !serials["RACE-1"] {
		t.Errorf("identity never read as the device's serial; saw %v", serials)
	}
}

func serialSeen(mu *sync.Mutex, serials map[string]bool) bool {
	mu.Lock()
	defer mu.Unlock()
	return serials["RACE-1"]
}
