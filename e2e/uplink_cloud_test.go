package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/uplink"
)

// runSim runs hearthsim with args and returns its stdout, stderr and exit
// code.
func runSim(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runBinary(t, nil, hearthsimBin(t), args...)
}

// TestCloudToolSignsAndGatewayAcks plays the operator with the real tools:
// `hearthsim cloud keygen` makes a key, the gateway's session is given the
// printed public key, `hearthsim cloud send` signs a lease and prints the
// gateway's ack, and hostile inputs sent with mosquitto_pub each get their
// documented ack while nothing but the signed lease reaches safety.
func TestCloudToolSignsAndGatewayAcks(t *testing.T) {
	t.Parallel()
	m := startBroker(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "ops.key")
	out, errOut, code := runSim(t, "cloud", "keygen", "--out", keyFile, "--key-id", "ops-1")
	if code != 0 {
		t.Fatalf("keygen exit %d: %s", code, errOut)
	}
	id, pub, ok := strings.Cut(strings.TrimSpace(out), ": ")
	if !ok || id != "ops-1" {
		t.Fatalf("keygen printed %q, want \"ops-1: BASE64\"", out)
	}
	keys, err := uplink.SetpointKeys(map[string]string{id: pub})
	if err != nil {
		t.Fatalf("keygen's public key is not what uplink.setpoint_keys takes: %v", err)
	}
	if _, _, code := runSim(t, "cloud", "keygen", "--out", keyFile); code == 0 {
		t.Error("keygen overwrote an existing key file")
	}

	s, leases := ackingGateway(t, uplink.Config{Broker: m.URL(), GatewayID: "gw-ops"}, keys)
	deadline := time.Now().Add(10 * time.Second)
	for !s.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("session never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	acks := subscribe(t, m.URL(), "hearth/v1/gw-ops/setpoint/ack")

	// A signed lease from flags: applied, and the ack printed.
	out, errOut, code = runSim(t, "cloud", "send", "--broker", m.URL(), "--gateway", "gw-ops",
		"--key", keyFile, "--key-id", "ops-1", "--mode", "power", "--power", "-2500", "--id", "lease-1", "--version", "7")
	if code != 0 {
		t.Fatalf("send exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var ack hearth.Ack
	if err := json.Unmarshal([]byte(out), &ack); err != nil || ack.ID != "lease-1" || ack.Version != 7 || ack.Result != hearth.ResultApplied ||
		ack.AppliedW == nil || *ack.AppliedW != -2500 {
		t.Fatalf("send printed %q, want the applied ack of lease-1 v7 at -2500 W", out)
	}

	// Unsigned, from a file: refused, exit code 3.
	lease := filepath.Join(dir, "lease.json")
	os.WriteFile(lease, []byte(`{"id":"lease-2","version":8,"gateway":"gw-ops","issued_at":"2026-11-25T10:00:00Z","valid_until":"2026-11-25T10:15:00Z","mode":"idle","fallback":"auto"}`+"\n"), 0o600)
	out, _, code = runSim(t, "cloud", "send", "--broker", m.URL(), "--gateway", "gw-ops", "--file", lease)
	if code != 3 || !strings.Contains(out, `"result":"rejected","reason":"unsigned"`) {
		t.Errorf("unsigned send: exit %d, printed %q; want 3 and rejected/unsigned", code, out)
	}
	// The same file, signed: exact file bytes are signed and accepted.
	out, _, code = runSim(t, "cloud", "send", "--broker", m.URL(), "--gateway", "gw-ops", "--file", lease, "--key", keyFile)
	if code != 0 || !strings.Contains(out, `"id":"lease-2","version":8,"result":"applied"`) {
		t.Errorf("signed file send: exit %d, printed %q", code, out)
	}

	// Hostile inputs, with mosquitto_pub as the cloud.
	pubBin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed")
	}
	big := filepath.Join(dir, "big.json")
	os.WriteFile(big, bytes.Repeat([]byte(" "), 1<<20), 0o600)
	hostile := []struct {
		args   []string
		reason hearth.Reason
	}{
		{[]string{"-m", `{"id":"x","version":`}, hearth.ReasonBadJSON},
		{[]string{"-m", `{"id":"x","version":9,"force":true}`}, hearth.ReasonUnknownField},
		{[]string{"-f", big}, hearth.ReasonTooLarge},
		{[]string{"-m", `{"id":"x","version":9,"power_w":NaN}`}, hearth.ReasonBadJSON},
		{[]string{"-m", `{"id":"x","version":9,"issued_at":"2026-11-25T10:00:00Z","valid_until":"2026-11-25T10:15:00Z","mode":"power","power_w":-1,"fallback":"auto"}`}, hearth.ReasonUnsigned},
	}
	for _, h := range hostile {
		args := append([]string{"-h", "127.0.0.1", "-p", itoaPort(m.Port()), "-q", "1", "-t", "hearth/v1/gw-ops/setpoint"}, h.args...)
		if out, err := exec.Command(pubBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub %v: %v %s", h.args, err, out)
		}
	}
	msgs := acks.WaitFor(t, 10*time.Second, func(ms []harness.Message) bool { return len(ms) >= 3+len(hostile) })
	for i, h := range hostile {
		var a hearth.Ack
		json.Unmarshal(msgs[3+i].Payload, &a)
		if a.Result != hearth.ResultRejected || a.Reason != h.reason {
			t.Errorf("hostile input %d: ack %s, want rejected/%s", i, msgs[3+i].Payload, h.reason)
		}
	}
	if applied := leases(); len(applied) != 2 || applied[0].ID != "lease-1" || applied[1].ID != "lease-2" {
		t.Errorf("leases that reached safety: %+v, want lease-1 and lease-2 only", applied)
	}
}

func itoaPort(p int) string {
	b, _ := json.Marshal(p)
	return string(b)
}

// TestCloudToolResendsAnUnackedLease: the contract's rule for a lease
// without an ack is to send it again with the same version. A gateway with
// a clean session that comes online after the first send never gets that
// one; `hearthsim cloud send` sends it again, and the gateway's ack of the
// repeat ends the wait.
func TestCloudToolResendsAnUnackedLease(t *testing.T) {
	t.Parallel()
	m := startBroker(t)
	var stdout, stderr harness.SyncBuffer
	cmd := exec.Command(hearthsimBin(t), "cloud", "send", "--broker", m.URL(), "--gateway", "gw-resend",
		"--mode", "idle", "--id", "lease-r", "--version", "3", "--resend", "300ms", "--wait", "20s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	// The gateway comes online after the first send.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "sent lease-r") {
		if time.Now().After(deadline) {
			t.Fatal("hearthsim never sent the lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, leases := ackingGateway(t, uplink.Config{Broker: m.URL(), GatewayID: "gw-resend", CleanSession: true}, nil)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("send: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("send still waiting\nstderr: %s", stderr.String())
	}
	if !strings.Contains(stdout.String(), `"id":"lease-r","version":3,"result":"applied"`) || !strings.Contains(stderr.String(), "sent lease-r version 3 again") {
		t.Errorf("send printed %q, logged %q; want the applied ack of a resend", stdout.String(), stderr.String())
	}
	if got := leases(); len(got) == 0 || got[0].ID != "lease-r" || got[0].Version != 3 {
		t.Errorf("leases that reached the gateway: %+v; want lease-r v3", got)
	}
}

// ackingGateway starts a gateway's session with cfg (fast reconnects) that
// checks setpoints with keys and acks every lease applied; leases returns
// those that reached it. The session is closed when the test ends.
func ackingGateway(t *testing.T, cfg uplink.Config, keys map[string]ed25519.PublicKey) (s *uplink.Session, leases func() []hearth.Setpoint) {
	t.Helper()
	var mu sync.Mutex
	var got []hearth.Setpoint
	cfg.BackoffMin, cfg.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
	s, err := uplink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.HandleSetpoints(keys, nil, func(sp hearth.Setpoint, _ time.Time) hearth.Ack {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, sp)
		return hearth.Ack{Result: hearth.ResultApplied, AppliedW: sp.PowerW}
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		s.Close(cctx)
		cancel()
	})
	return s, func() []hearth.Setpoint {
		mu.Lock()
		defer mu.Unlock()
		return append([]hearth.Setpoint(nil), got...)
	}
}
