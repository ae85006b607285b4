package uplink

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// testGW is the gateway the tests' leases are for.
const testGW = "gw-test"

const goodLease = `{"id":"b7e1","version":42,"gateway":"gw-test","issued_at":"2026-11-25T10:00:00Z","valid_until":"2026-11-25T10:15:00Z","mode":"power","power_w":-3000,"fallback":"auto"}`

// lease returns goodLease with fields replaced (a nil value deletes one).
func lease(t testing.TB, set map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(goodLease), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forGW returns goodLease for gateway gw.
func forGW(t testing.TB, gw string) []byte { return lease(t, map[string]any{"gateway": gw}) }

// raw splices a raw JSON token in for field's value in goodLease.
func raw(field, token string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"b7e1","version":42,"gateway":"gw-test","issued_at":"2026-11-25T10:00:00Z","valid_until":"2026-11-25T10:15:00Z","mode":"power","fallback":"auto","`)
	b.WriteString(field + `":` + token + `}`)
	return b.Bytes()
}

type testKey struct {
	id   string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKey(t testing.TB, id string) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{id, pub, priv}
}

func sign(t testing.TB, payload []byte, k testKey) []byte {
	t.Helper()
	b, err := SignSetpoint(payload, k.id, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSetpointGood(t *testing.T) {
	sp, rej := ParseSetpoint([]byte(goodLease), Trust{Gateway: testGW}, 0)
	if rej != nil {
		t.Fatalf("ParseSetpoint(good) rejected: %v", rej)
	}
	w := hearth.Watts(-3000)
	want := hearth.Setpoint{
		ID: "b7e1", Version: 42,
		IssuedAt:   time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		ValidUntil: time.Date(2026, 11, 25, 10, 15, 0, 0, time.UTC),
		Mode:       hearth.ModePower, PowerW: &w, Fallback: hearth.ModeAuto,
	}
	if sp.ID != want.ID || sp.Version != want.Version || !sp.IssuedAt.Equal(want.IssuedAt) || !sp.ValidUntil.Equal(want.ValidUntil) ||
		sp.Mode != want.Mode || sp.PowerW == nil || *sp.PowerW != w || sp.Fallback != want.Fallback || sp.Schedule != nil {
		t.Errorf("ParseSetpoint(good) = %+v, want %+v", sp, want)
	}

	withSchedule := lease(t, map[string]any{"mode": "auto", "power_w": nil, "schedule": []map[string]any{
		{"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T10:05:00Z", "mode": "power", "power_w": 2000},
		{"start": "2026-11-25T10:05:00+01:00", "end": "2026-11-25T10:10:00Z", "mode": "idle"}, // 09:05Z: before the first
	}})
	if _, rej := ParseSetpoint(withSchedule, Trust{Gateway: testGW}, 0); rej == nil || rej.Reason != hearth.ReasonBadValue {
		t.Errorf("out-of-order schedule: rejection %v, want bad_value", rej)
	}
	withSchedule = lease(t, map[string]any{"mode": "auto", "power_w": nil, "schedule": []map[string]any{
		{"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T10:05:00Z", "mode": "power", "power_w": 2000},
		{"start": "2026-11-25T11:05:00+01:00", "end": "2026-11-25T10:10:00Z", "mode": "idle"},
	}})
	sp, rej = ParseSetpoint(withSchedule, Trust{Gateway: testGW}, 0)
	if rej != nil {
		t.Fatalf("schedule rejected: %v", rej)
	}
	if len(sp.Schedule) != 2 || sp.Schedule[1].Start != time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC) ||
		*sp.Schedule[0].PowerW != 2000 || sp.Schedule[1].PowerW != nil || sp.Schedule[1].Mode != hearth.ModeIdle {
		t.Errorf("schedule = %+v", sp.Schedule)
	}
}

func TestParseSetpointNegativeZeroIsZero(t *testing.T) {
	sp, rej := ParseSetpoint(raw("power_w", "-0"), Trust{Gateway: testGW}, 0)
	if rej != nil {
		t.Fatalf("power_w -0 rejected: %v", rej)
	}
	if *sp.PowerW != 0 || math.Signbit(float64(*sp.PowerW)) {
		t.Errorf("power_w -0 parsed as %v (signbit %t), want +0", *sp.PowerW, math.Signbit(float64(*sp.PowerW)))
	}
}

// TestParseSetpointHostile is the table of hostile inputs of the contract
// (docs/mqtt.md, "Setpoint checks"): each gets its documented reason and
// no setpoint.
func TestParseSetpointHostile(t *testing.T) {
	cloudKey, otherKey := newKey(t, "cloud-1"), newKey(t, "cloud-1")
	rogue := newKey(t, "rogue")
	keys := map[string]ed25519.PublicKey{cloudKey.id: cloudKey.pub}

	signedOther := func() []byte { // a good signature, over other bytes
		var env Envelope
		json.Unmarshal(sign(t, []byte(goodLease), cloudKey), &env)
		env.Payload = lease(t, map[string]any{"power_w": 5000})
		b, _ := json.Marshal(env)
		return b
	}()
	huge := append([]byte(`{"id":"`), bytes.Repeat([]byte("x"), 1<<20)...)
	huge = append(huge, `"}`...)
	envelope := func(payload, keyID, sig string) []byte {
		return []byte(`{"payload":"` + payload + `","key_id":"` + keyID + `","sig":"` + sig + `"}`)
	}
	b64 := base64.StdEncoding.EncodeToString

	tests := []struct {
		name    string
		payload []byte
		keys    map[string]ed25519.PublicKey
		reason  hearth.Reason
		id      string // the id the ack must carry, when readable
	}{
		{"malformed json", []byte(`{"id":"b7e1","version":42,`), nil, hearth.ReasonBadJSON, ""},
		{"empty", nil, nil, hearth.ReasonBadJSON, ""},
		{"not an object", []byte(`[1,2,3]`), nil, hearth.ReasonBadJSON, ""},
		{"null", []byte(`null`), nil, hearth.ReasonBadJSON, ""},
		{"trailing data", []byte(goodLease + ` {}`), nil, hearth.ReasonBadJSON, ""},
		{"trailing garbage", []byte(goodLease + `x`), nil, hearth.ReasonBadJSON, ""},
		{"duplicate key", raw("power_w", `100,"power_w":-3000`), nil, hearth.ReasonBadJSON, "b7e1"},
		{"duplicate key by escape", raw("power_w", `100,"power\u005fw":-3000`), nil, hearth.ReasonBadJSON, "b7e1"},
		{"invalid utf-8", []byte("{\"id\":\"b7\xff\"}"), nil, hearth.ReasonBadJSON, ""},
		{"deep nesting", raw("power_w", strings.Repeat("[", 50)+strings.Repeat("]", 50)), nil, hearth.ReasonBadJSON, "b7e1"},
		{"unknown field", lease(t, map[string]any{"force": true}), nil, hearth.ReasonUnknownField, "b7e1"},
		{"field in other case", raw("Power_W", "1"), nil, hearth.ReasonUnknownField, "b7e1"},
		{"unknown schedule field", lease(t, map[string]any{"mode": "auto", "power_w": nil, "schedule": []map[string]any{{"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T10:05:00Z", "mode": "idle", "x": 1}}}), nil, hearth.ReasonUnknownField, "b7e1"},
		{"1 MiB payload", huge, nil, hearth.ReasonTooLarge, ""},
		{"over the configured limit", []byte(goodLease), nil, hearth.ReasonTooLarge, ""},
		{"NaN token", raw("power_w", "NaN"), nil, hearth.ReasonBadJSON, ""},
		{"Infinity token", raw("power_w", "Infinity"), nil, hearth.ReasonBadJSON, ""},
		{"-Infinity token", raw("power_w", "-Infinity"), nil, hearth.ReasonBadJSON, ""},
		{"NaN string", raw("power_w", `"NaN"`), nil, hearth.ReasonBadValue, "b7e1"},
		{"+Inf string", raw("power_w", `"+Inf"`), nil, hearth.ReasonBadValue, "b7e1"},
		{"-Infinity string", raw("power_w", `"-Infinity"`), nil, hearth.ReasonBadValue, "b7e1"},
		{"number beyond float64", raw("power_w", "1e400"), nil, hearth.ReasonBadValue, "b7e1"},
		{"implausible power", raw("power_w", "-1e12"), nil, hearth.ReasonBadValue, "b7e1"},
		{"power as string", raw("power_w", `"3000"`), nil, hearth.ReasonBadJSON, "b7e1"},
		{"power as bool", raw("power_w", `true`), nil, hearth.ReasonBadJSON, "b7e1"},
		{"version as string", lease(t, map[string]any{"version": "42"}), nil, hearth.ReasonBadJSON, "b7e1"},
		{"version fractional", lease(t, map[string]any{"version": 42.5}), nil, hearth.ReasonBadValue, "b7e1"},
		{"version negative", lease(t, map[string]any{"version": -1}), nil, hearth.ReasonBadValue, "b7e1"},
		{"version zero", lease(t, map[string]any{"version": 0}), nil, hearth.ReasonBadValue, "b7e1"},
		{"version beyond uint64", []byte(strings.Replace(goodLease, `"version":42`, `"version":18446744073709551616`, 1)), nil, hearth.ReasonBadValue, "b7e1"},
		{"id as number", lease(t, map[string]any{"id": 7}), nil, hearth.ReasonBadJSON, ""},
		{"id empty", lease(t, map[string]any{"id": ""}), nil, hearth.ReasonBadValue, ""},
		{"id with control", lease(t, map[string]any{"id": "a\nb"}), nil, hearth.ReasonBadValue, "a\nb"},
		{"missing id", lease(t, map[string]any{"id": nil}), nil, hearth.ReasonBadValue, ""},
		{"missing version", lease(t, map[string]any{"version": nil}), nil, hearth.ReasonBadValue, "b7e1"},
		{"missing valid_until", lease(t, map[string]any{"valid_until": nil}), nil, hearth.ReasonBadValue, "b7e1"},
		{"missing mode", lease(t, map[string]any{"mode": nil}), nil, hearth.ReasonBadValue, "b7e1"},
		{"missing fallback", lease(t, map[string]any{"fallback": nil}), nil, hearth.ReasonBadValue, "b7e1"},
		{"missing power for power mode", lease(t, map[string]any{"power_w": nil}), nil, hearth.ReasonBadValue, "b7e1"},
		{"power with idle mode", lease(t, map[string]any{"mode": "idle"}), nil, hearth.ReasonBadValue, "b7e1"},
		{"bad time", lease(t, map[string]any{"issued_at": "yesterday"}), nil, hearth.ReasonBadValue, "b7e1"},
		{"time as number", lease(t, map[string]any{"valid_until": 1764065700}), nil, hearth.ReasonBadJSON, "b7e1"},
		{"lease ends before it starts", lease(t, map[string]any{"valid_until": "2026-11-25T09:00:00Z"}), nil, hearth.ReasonBadValue, "b7e1"},
		{"unknown mode", lease(t, map[string]any{"mode": "turbo"}), nil, hearth.ReasonUnknownMode, "b7e1"},
		{"unknown fallback", lease(t, map[string]any{"fallback": "panic"}), nil, hearth.ReasonUnknownMode, "b7e1"},
		{"power fallback", lease(t, map[string]any{"fallback": "power"}), nil, hearth.ReasonBadValue, "b7e1"},
		{"schedule not an array", lease(t, map[string]any{"schedule": map[string]any{}}), nil, hearth.ReasonBadJSON, "b7e1"},
		{"schedule outside lease", lease(t, map[string]any{"mode": "auto", "power_w": nil, "schedule": []map[string]any{{"start": "2026-11-25T10:00:00Z", "end": "2026-11-26T10:05:00Z", "mode": "idle"}}}), nil, hearth.ReasonBadValue, "b7e1"},

		// Signatures required.
		{"unsigned", []byte(goodLease), keys, hearth.ReasonUnsigned, "b7e1"},
		{"envelope without sig", envelope(b64([]byte(goodLease)), "cloud-1", ""), keys, hearth.ReasonUnsigned, "b7e1"},
		{"valid signature from an unknown key", sign(t, []byte(goodLease), rogue), keys, hearth.ReasonUnknownKey, "b7e1"},
		{"known key id, other key's signature", sign(t, []byte(goodLease), otherKey), keys, hearth.ReasonBadSignature, "b7e1"},
		{"signature over different bytes", signedOther, keys, hearth.ReasonBadSignature, "b7e1"},
		{"signature truncated", envelope(b64([]byte(goodLease)), "cloud-1", b64([]byte("short"))), keys, hearth.ReasonBadSignature, "b7e1"},
		{"payload not base64", envelope("%%%", "cloud-1", b64(make([]byte, 64))), keys, hearth.ReasonBadJSON, ""},
		{"envelope unknown field", []byte(`{"payload":"","key_id":"cloud-1","sig":"","alg":"none"}`), keys, hearth.ReasonUnknownField, ""},
		{"signed payload with unknown field", sign(t, lease(t, map[string]any{"x": 1}), cloudKey), keys, hearth.ReasonUnknownField, "b7e1"},
		{"signed envelope in envelope", sign(t, sign(t, []byte(goodLease), cloudKey), cloudKey), keys, hearth.ReasonUnknownField, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := 0
			if tt.name == "over the configured limit" {
				max = len(goodLease) - 1
			}
			sp, rej := ParseSetpoint(tt.payload, Trust{Gateway: testGW, Keys: tt.keys}, max)
			if rej == nil {
				t.Fatalf("ParseSetpoint accepted %+v, want reason %s", sp, tt.reason)
			}
			if rej.Reason != tt.reason {
				t.Errorf("reason = %s (%s), want %s", rej.Reason, rej.Detail, tt.reason)
			}
			if rej.ID != tt.id {
				t.Errorf("rejection id = %q, want %q", rej.ID, tt.id)
			}
			if sp.ID != "" || sp.Version != 0 || sp.PowerW != nil {
				t.Errorf("a rejected setpoint came with a value: %+v", sp)
			}
			ack := rej.Ack()
			if ack.Result != hearth.ResultRejected || ack.Reason != tt.reason || ack.ID != tt.id {
				t.Errorf("Ack() = %+v", ack)
			}
		})
	}
}

func TestParseSetpointSigned(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	keys := map[string]ed25519.PublicKey{k1.id: k1.pub, k2.id: k2.pub}
	for _, k := range []testKey{k1, k2} {
		sp, rej := ParseSetpoint(sign(t, []byte(goodLease), k), Trust{Gateway: testGW, Keys: keys}, 0)
		if rej != nil || sp.ID != "b7e1" || sp.Version != 42 {
			t.Errorf("signed with %s: %+v, %v; want the lease", k.id, sp, rej)
		}
	}
	// Without keys an envelope is unwrapped, unchecked.
	if sp, rej := ParseSetpoint(sign(t, []byte(goodLease), newKey(t, "x")), Trust{Gateway: testGW}, 0); rej != nil || sp.ID != "b7e1" {
		t.Errorf("envelope without configured keys: %+v, %v", sp, rej)
	}
}

func TestSetpointKeys(t *testing.T) {
	k := newKey(t, "a")
	keys, err := SetpointKeys(map[string]string{"a": base64.StdEncoding.EncodeToString(k.pub) + "\n"})
	if err != nil || !k.pub.Equal(keys["a"]) {
		t.Fatalf("SetpointKeys = %v, %v", keys, err)
	}
	if _, err := SetpointKeys(map[string]string{"a": "!!", "b": base64.StdEncoding.EncodeToString([]byte("short"))}); err == nil ||
		!strings.Contains(err.Error(), "not base64") || !strings.Contains(err.Error(), "32 bytes") {
		t.Errorf("SetpointKeys(bad) error = %v, want both problems", err)
	}
}

// FuzzParseSetpoint checks that no input panics, and that every input
// gives exactly one of a setpoint or a rejection with a known reason.
func FuzzParseSetpoint(f *testing.F) {
	k := newKey(f, "k")
	keys := map[string]ed25519.PublicKey{k.id: k.pub}
	for _, s := range []string{goodLease, `{}`, `null`, `{"payload":""}`, `{"id":"a","version":1e999}`,
		string(raw("power_w", "-0")), string(raw("power_w", `"NaN"`)), `[[[[[[[[[[]]]]]]]]]]`,
		`{"id":"x","version":1,"issued_at":"2026-01-01T00:00:00Z","valid_until":"2026-01-01T01:00:00Z","mode":"auto","fallback":"idle","schedule":[{"start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:30:00Z","mode":"power","power_w":1}]}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Add(sign(f, []byte(goodLease), k), true)
	reasons := map[hearth.Reason]bool{
		hearth.ReasonTooLarge: true, hearth.ReasonBadJSON: true, hearth.ReasonUnknownField: true, hearth.ReasonUnsigned: true,
		hearth.ReasonUnknownKey: true, hearth.ReasonBadSignature: true, hearth.ReasonBadValue: true, hearth.ReasonUnknownMode: true,
		hearth.ReasonWrongGateway: true,
	}
	f.Fuzz(func(t *testing.T, payload []byte, signed bool) {
		var ks map[string]ed25519.PublicKey
		if signed {
			ks = keys
		}
		sp, rej := ParseSetpoint(payload, Trust{Gateway: testGW, Keys: ks}, 0)
		if rej != nil {
			if !reasons[rej.Reason] {
				t.Fatalf("unknown reason %q", rej.Reason)
			}
			if sp.ID != "" || sp.Version != 0 || sp.Mode != "" {
				t.Fatalf("setpoint %+v returned with rejection %v", sp, rej)
			}
			return
		}
		if sp.ID == "" || sp.Version == 0 || !sp.Mode.Valid() || !sp.Fallback.Valid() || !sp.ValidUntil.After(sp.IssuedAt) {
			t.Fatalf("accepted an invalid setpoint %+v from %q", sp, payload)
		}
		if (sp.Mode == hearth.ModePower) != (sp.PowerW != nil) {
			t.Fatalf("mode %s with power %v", sp.Mode, sp.PowerW)
		}
		if sp.PowerW != nil && (math.IsNaN(float64(*sp.PowerW)) || math.Abs(float64(*sp.PowerW)) > MaxPowerW) {
			t.Fatalf("power_w %v accepted", *sp.PowerW)
		}
		if signed && !bytes.Contains(payload, []byte(`"sig"`)) && !bytes.Contains(payload, []byte(`\u`)) {
			t.Fatalf("accepted without a signature: %q", payload)
		}
	})
}

// TestSetpointNamesItsGateway: a lease signed for gw-a is refused by gw-b,
// which trusts the same key; a signed lease that names no gateway is
// refused too; an unsigned one may leave it out, but not name another.
func TestSetpointNamesItsGateway(t *testing.T) {
	t.Parallel()
	k := newKey(t, "ops-1")
	keys := map[string]ed25519.PublicKey{k.id: k.pub}
	forA := sign(t, forGW(t, "gw-a"), k)
	if sp, rej := ParseSetpoint(forA, Trust{Gateway: "gw-a", Keys: keys}, 0); rej != nil || sp.Gateway != "gw-a" || sp.KeyID != "ops-1" {
		t.Fatalf("gw-a's own lease: %+v, %v; want it, verified with ops-1", sp, rej)
	}
	for _, c := range []struct {
		name    string
		payload []byte
		trust   Trust
	}{
		{"gw-a's envelope replayed to gw-b", forA, Trust{Gateway: "gw-b", Keys: keys}},
		{"signed, names no gateway", sign(t, lease(t, map[string]any{"gateway": nil}), k), Trust{Gateway: testGW, Keys: keys}},
		{"unsigned, names another gateway", forGW(t, "gw-a"), Trust{Gateway: "gw-b"}},
	} {
		_, rej := ParseSetpoint(c.payload, c.trust, 0)
		if rej == nil || rej.Reason != hearth.ReasonWrongGateway || rej.ID != "b7e1" {
			t.Errorf("%s: %v, want wrong_gateway with the lease's id", c.name, rej)
		}
	}
	if _, rej := ParseSetpoint(lease(t, map[string]any{"gateway": nil}), Trust{Gateway: testGW}, 0); rej != nil {
		t.Errorf("unsigned lease without a gateway on a gateway without keys: %v", rej)
	}
}

// TestRevokedKeyIsRefused: a key listed as revoked is refused even while
// it is still among the trusted keys.
func TestRevokedKeyIsRefused(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	tr := Trust{Gateway: testGW, Keys: map[string]ed25519.PublicKey{k1.id: k1.pub, k2.id: k2.pub}, Revoked: []string{"k1"}}
	if _, rej := ParseSetpoint(sign(t, []byte(goodLease), k1), tr, 0); rej == nil || rej.Reason != hearth.ReasonKeyRevoked {
		t.Errorf("signed with revoked k1: %v, want key_revoked", rej)
	}
	if sp, rej := ParseSetpoint(sign(t, []byte(goodLease), k2), tr, 0); rej != nil || sp.KeyID != "k2" {
		t.Errorf("signed with k2: %+v, %v, want accepted with key k2", sp, rej)
	}
}

// TestNoKeysInForceRefusesAll: a gateway that requires keys and has none
// in force (the only key moved to revoked_keys) refuses a bare lease and
// one signed by any key, where an open one accepts them.
func TestNoKeysInForceRefusesAll(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	closedTr := Trust{Gateway: testGW, Revoked: []string{"k1"}, KeysRequired: true}
	for _, tt := range []struct {
		name    string
		payload []byte
		want    hearth.Reason
	}{
		{"bare", []byte(goodLease), hearth.ReasonNoKeys},
		{"signed with the revoked key", sign(t, []byte(goodLease), k1), hearth.ReasonKeyRevoked},
		{"signed with an unknown key", sign(t, []byte(goodLease), k2), hearth.ReasonNoKeys},
	} {
		if _, rej := ParseSetpoint(tt.payload, closedTr, 0); rej == nil || rej.Reason != tt.want || rej.ID != "b7e1" {
			t.Errorf("%s, no key in force: %v, want %s with the lease's id", tt.name, rej, tt.want)
		}
		open := closedTr
		open.KeysRequired = false
		if _, rej := ParseSetpoint(tt.payload, open, 0); rej != nil {
			t.Errorf("%s, unsigned allowed: %v, want accepted", tt.name, rej)
		}
	}
}
