package telemetry

import (
	"sync"
	"testing"
	"time"
)

// TestConnWatcherRecordsWhatItIsTold: each change the session reports
// becomes one event, in order, naming the node and, for a loss, the error
// it was told; DownSince moves to the loss.
func TestConnWatcherRecordsWhatItIsTold(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	var types []string
	w := NewConnWatcher(ConnWatcherOptions{Record: func(typ string, f map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		types = append(types, typ)
		got = append(got, f)
	}})
	w.Start()
	defer w.Close()
	before := w.DownSince()
	w.Up("tcp://n1:1883")
	w.Lost("tcp://n1:1883", "EOF")
	w.Up("tcp://n2:1883")
	if !w.DownSince().After(before) {
		t.Error("DownSince did not move to the loss")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events recorded, want 3", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []struct{ typ, broker, err string }{
		{"uplink_connected", "tcp://n1:1883", ""}, {"uplink_lost", "tcp://n1:1883", "EOF"}, {"uplink_connected", "tcp://n2:1883", ""},
	}
	for i, w := range want {
		e, _ := got[i]["error"].(string)
		if types[i] != w.typ || got[i]["broker"] != w.broker || e != w.err {
			t.Errorf("event %d: %s %v; want %s broker %s error %q", i, types[i], got[i], w.typ, w.broker, w.err)
		}
	}
}
