package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

// TestAcksSayWhy is the cloud developer's view of refusals: a stale lease
// is acked with the highest version accepted, a lease with a value of the
// wrong type with the field and what was wrong, and a key reload with no
// revoked key reports an empty list, not null. Every payload is held to
// its schema by the contract check.
func TestAcksSayWhy(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := startTrustAgent(t, "gw-why", m.URL(), pub, "")
	now := time.Now()
	if ack := a.send(t, m.URL(), signedLease(t, a.gw, 5, now, 10*time.Minute, 800, key)); ack.Result != "applied" {
		t.Fatalf("version 5: %+v, want applied", ack)
	}
	ack := a.send(t, m.URL(), signedLease(t, a.gw, 3, now, 10*time.Minute, 800, key))
	if ack.Result != "stale" || ack.HighestVersion == nil || *ack.HighestVersion != 5 || !strings.Contains(ack.Detail, "5") {
		t.Errorf("version 3 after 5: %+v; want stale with highest_version 5 and a detail", ack)
	}
	b, _ := json.Marshal(map[string]any{
		"id": "typo", "version": 6, "gateway": a.gw,
		"issued_at": now.UTC().Format(time.RFC3339), "valid_until": now.Add(time.Minute).UTC().Format(time.RFC3339),
		"mode": "power", "power_w": "-3000", "fallback": "auto",
	})
	ack = a.send(t, m.URL(), sign(t, b, "ops-1", key))
	if ack.Result != "rejected" || ack.Reason != "bad_json" || !strings.Contains(ack.Detail, "power_w") || len(ack.Detail) > 256 {
		t.Errorf("power_w as a string: %+v; want rejected bad_json with a detail naming power_w", ack)
	}

	if _, stderr, code := hearthCLI(t, nil, "keys", "reload", "--socket", a.dir+"/hearth.sock"); code != 0 {
		t.Fatalf("hearth keys reload: exit %d: %s", code, stderr)
	}
	a.rec.WaitFor(t, 10*time.Second, func([]harness.Message) bool { return len(a.events(t, "keys_reloaded")) > 0 })
	ev := a.events(t, "keys_reloaded")[0]
	if r, ok := ev["revoked"].([]any); !ok || len(r) != 0 {
		t.Errorf("keys_reloaded with no revoked key: revoked is %#v, want []", ev["revoked"])
	}
}
