package harness

import (
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// NotifySocket listens where systemd would (a unixgram socket for
// NOTIFY_SOCKET) until the test ends, and returns its path and a function
// that returns every message told so far, in order.
func NotifySocket(t testing.TB) (string, func() []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var msgs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return path, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(msgs)
	}
}
