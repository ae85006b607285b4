package uplink

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hearth-energy/hearth"
)

// Limits of a setpoint message. Anything beyond them is refused before it
// reaches safety.
const (
	// MaxSetpointBytes is the default and largest accepted size of a
	// setpoint message (the envelope, when signed), in bytes.
	MaxSetpointBytes = 64 << 10
	// MaxPowerW bounds |power_w|: a finite value beyond it is not a
	// plausible request for a home battery but a broken sender.
	MaxPowerW = 10e6
	// MaxScheduleEntries bounds a lease's schedule (5-minute slots for a day).
	MaxScheduleEntries = 288
	// MaxIDLength bounds a setpoint id, in bytes.
	MaxIDLength = 128
	// maxDepth bounds JSON nesting; the contract needs 3 levels.
	maxDepth = 8
)

// Envelope carries a signed setpoint: Payload holds the exact bytes of the
// setpoint JSON that Sig, an ed25519 signature, was made over with the key
// the cloud names KeyID. Payload and Sig are standard base64 with padding
// (encoding/json's []byte encoding).
type Envelope struct {
	Payload []byte `json:"payload"`
	KeyID   string `json:"key_id"`
	Sig     []byte `json:"sig"`
}

// SignSetpoint wraps payload, the exact bytes of a setpoint JSON, in a
// signed Envelope and returns the envelope's JSON. It is the cloud's half
// of the contract, here so that both halves share one definition.
func SignSetpoint(payload []byte, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign setpoint: private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if keyID == "" {
		return nil, errors.New("sign setpoint: empty key id")
	}
	return json.Marshal(Envelope{Payload: payload, KeyID: keyID, Sig: ed25519.Sign(key, payload)})
}

// Rejection says why a setpoint message was refused before it reached
// safety. ID and Version are those of the message when they could be read
// (from an unverified payload too, so that the cloud can match the ack);
// Reason is one of the hearth.Reason* codes; Detail is for logs.
type Rejection struct {
	ID      string
	Version uint64
	Reason  hearth.Reason
	Detail  string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("setpoint %q version %d rejected: %s: %s", r.ID, r.Version, r.Reason, r.Detail)
}

// Ack is the ack to publish for the rejection.
func (r *Rejection) Ack() hearth.Ack {
	return hearth.Ack{ID: r.ID, Version: r.Version, Result: hearth.ResultRejected, Reason: r.Reason, Detail: hearth.ClipDetail(r.Detail)}
}

// shape is the structure a strict JSON document must have: an object with
// exactly the listed field names (case-sensitive), or an array of elem. A
// nil shape admits any value, still without duplicate keys.
type shape struct {
	fields map[string]*shape
	elem   *shape
}

var (
	scheduleShape = &shape{elem: &shape{fields: map[string]*shape{
		"start": nil, "end": nil, "mode": nil, "power_w": nil,
	}}}
	setpointShape = &shape{fields: map[string]*shape{
		"id": nil, "version": nil, "gateway": nil, "issued_at": nil, "valid_until": nil,
		"mode": nil, "power_w": nil, "schedule": scheduleShape, "fallback": nil,
	}}
	envelopeShape = &shape{fields: map[string]*shape{"payload": nil, "key_id": nil, "sig": nil}}
)

// Trust is what a gateway accepts setpoints by: its own id, which a lease
// must name, and the keys it must be signed with.
type Trust struct {
	// Gateway is this gateway's id. A signed lease must name it in its
	// gateway field; an unsigned one may, and must then be right.
	Gateway string
	// Keys are the ed25519 public keys by key id (uplink.setpoint_keys);
	// none means unsigned messages are accepted, unless KeysRequired.
	Keys map[string]ed25519.PublicKey
	// KeysRequired closes the gateway when Keys is empty: keys were
	// configured on it once (or some are revoked), and unsigned messages
	// were not explicitly allowed again (uplink.allow_unsigned), so an
	// empty set refuses every message (no_keys) instead of opening up.
	KeysRequired bool
	// Revoked are key ids refused whatever Keys holds
	// (uplink.revoked_keys): a leaked key is listed here, so a stale copy
	// of the config that still names it cannot bring it back.
	Revoked []string
}

func (tr Trust) revoked(id string) bool { return slices.Contains(tr.Revoked, id) }

// ParseSetpoint checks one setpoint message in the contract's order and
// returns the lease it carries, or a rejection: never both, never neither.
//
//  1. size: at most maxBytes (≤ 0 or above MaxSetpointBytes means
//     MaxSetpointBytes): too_large;
//  2. strict JSON: valid UTF-8, one value, no trailing data, no duplicate
//     keys: bad_json; a field the contract does not define (names are
//     case-sensitive): unknown_field;
//  3. signature, when tr has keys: the message must be an Envelope
//     (unsigned), name a key not revoked (key_revoked) and configured
//     (unknown_key), and carry a signature over its payload bytes
//     (bad_signature). Without keys an envelope is unwrapped unchecked,
//     unless tr.KeysRequired: then every message is refused (no_keys, or
//     key_revoked for an envelope naming a revoked key);
//  4. gateway: a signed lease must name this gateway, an unsigned one may
//     (wrong_gateway), so that an envelope for one gateway is refused by
//     another that trusts the same key;
//  5. types and values intrinsic to the message: a wrong JSON type is
//     bad_json; a missing, malformed, non-finite or out-of-range value is
//     bad_value; an unknown mode or fallback is unknown_mode.
//
// Version, expiry and safety depend on the agent's state and are checked
// by the caller. The returned setpoint's KeyID names the key its signature
// was verified with. Negative zero power is returned as 0.
func ParseSetpoint(payload []byte, tr Trust, maxBytes int) (hearth.Setpoint, *Rejection) {
	keys := tr.Keys
	if maxBytes <= 0 || maxBytes > MaxSetpointBytes {
		maxBytes = MaxSetpointBytes
	}
	if len(payload) > maxBytes {
		return hearth.Setpoint{}, &Rejection{Reason: hearth.ReasonTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(payload), maxBytes)}
	}
	isEnvelope, rej := checkStrict(payload, nil)
	if rej != nil {
		return hearth.Setpoint{}, withID(rej, payload)
	}
	keyID := "" // the key the signature verified with
	if len(keys) == 0 && tr.KeysRequired {
		return hearth.Setpoint{}, closed(payload, isEnvelope, tr)
	}
	if isEnvelope {
		if _, rej := checkStrict(payload, envelopeShape); rej != nil {
			return hearth.Setpoint{}, rej
		}
		var env Envelope
		if err := json.Unmarshal(payload, &env); err != nil {
			return hearth.Setpoint{}, &Rejection{Reason: hearth.ReasonBadJSON, Detail: "envelope: " + err.Error()}
		}
		if len(keys) > 0 {
			key, ok := keys[env.KeyID]
			switch {
			case env.KeyID == "" || len(env.Sig) == 0:
				return hearth.Setpoint{}, peek(env.Payload, hearth.ReasonUnsigned, "envelope without key_id or sig")
			case tr.revoked(env.KeyID):
				return hearth.Setpoint{}, peek(env.Payload, hearth.ReasonKeyRevoked, fmt.Sprintf("key id %q is revoked", env.KeyID))
			case !ok:
				return hearth.Setpoint{}, peek(env.Payload, hearth.ReasonUnknownKey, fmt.Sprintf("key id %q is not configured", env.KeyID))
			case len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, env.Payload, env.Sig):
				return hearth.Setpoint{}, peek(env.Payload, hearth.ReasonBadSignature, fmt.Sprintf("signature does not verify with key %q", env.KeyID))
			}
			keyID = env.KeyID
		}
		payload = env.Payload
	} else if len(keys) > 0 {
		// Strict JSON comes before the signature: a bare message with an
		// unknown field is refused as such, not merely as unsigned.
		if _, rej := checkStrict(payload, setpointShape); rej != nil {
			return hearth.Setpoint{}, withID(rej, payload)
		}
		return hearth.Setpoint{}, peek(payload, hearth.ReasonUnsigned, "signatures are required")
	}

	if isEnv, rej := checkStrict(payload, setpointShape); rej != nil {
		return hearth.Setpoint{}, withID(rej, payload)
	} else if isEnv {
		return hearth.Setpoint{}, &Rejection{Reason: hearth.ReasonUnknownField, Detail: "envelope inside an envelope"}
	}
	if rej := checkGateway(payload, tr.Gateway, keyID != ""); rej != nil {
		return hearth.Setpoint{}, withID(rej, payload)
	}
	sp, rej := decodeSetpoint(payload)
	if rej != nil {
		return hearth.Setpoint{}, withID(rej, payload)
	}
	sp.KeyID = keyID
	return sp, nil
}

// closed is the rejection of every message by a gateway that requires
// keys and has none in force: key_revoked when the envelope names a
// revoked key, no_keys otherwise.
func closed(payload []byte, isEnvelope bool, tr Trust) *Rejection {
	var env Envelope
	if isEnvelope && json.Unmarshal(payload, &env) == nil {
		if tr.revoked(env.KeyID) {
			return peek(env.Payload, hearth.ReasonKeyRevoked, fmt.Sprintf("key id %q is revoked, and no key is in force", env.KeyID))
		}
		payload = env.Payload
	}
	return peek(payload, hearth.ReasonNoKeys, "no setpoint key is in force: keys were configured on this gateway, and unsigned setpoints are not allowed (uplink.allow_unsigned)")
}

// checkGateway refuses a lease that names another gateway, and a signed
// one that names none.
func checkGateway(payload []byte, gateway string, signed bool) *Rejection {
	var head struct {
		Gateway *string `json:"gateway"`
	}
	if err := json.Unmarshal(payload, &head); err != nil {
		return nil // the decoder reports the type
	}
	switch {
	case head.Gateway == nil && signed:
		return bad(hearth.ReasonWrongGateway, "a signed lease must name its gateway (%q)", gateway)
	case head.Gateway != nil && *head.Gateway != gateway:
		return bad(hearth.ReasonWrongGateway, "lease for gateway %q, this is %q", *head.Gateway, gateway)
	}
	return nil
}

// checkStrict reads payload as exactly one JSON value of shape s, and
// reports whether it is an object with a "payload" key (an envelope).
func checkStrict(payload []byte, s *shape) (bool, *Rejection) {
	if !utf8.Valid(payload) {
		return false, &Rejection{Reason: hearth.ReasonBadJSON, Detail: "not valid UTF-8"}
	}
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v)
		return false, &Rejection{Reason: hearth.ReasonBadJSON, Detail: fmt.Sprint(err)}
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	isEnvelope := false
	if err := walk(dec, s, 0, &isEnvelope); err != nil {
		return false, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return false, &Rejection{Reason: hearth.ReasonBadJSON, Detail: "data after the JSON value"}
	}
	return isEnvelope, nil
}

// walk consumes one value from dec, checking it against s.
func walk(dec *json.Decoder, s *shape, depth int, isEnvelope *bool) *Rejection {
	if depth > maxDepth {
		return &Rejection{Reason: hearth.ReasonBadJSON, Detail: fmt.Sprintf("nested deeper than %d", maxDepth)}
	}
	tok, err := dec.Token()
	if err != nil {
		return &Rejection{Reason: hearth.ReasonBadJSON, Detail: err.Error()}
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar; its type is checked when decoded
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return &Rejection{Reason: hearth.ReasonBadJSON, Detail: err.Error()}
			}
			key, _ := kt.(string)
			if seen[key] {
				return &Rejection{Reason: hearth.ReasonBadJSON, Detail: fmt.Sprintf("duplicate key %q", key)}
			}
			seen[key] = true
			if depth == 0 && key == "payload" {
				*isEnvelope = true
			}
			var sub *shape
			if s != nil {
				if s.fields == nil {
					return &Rejection{Reason: hearth.ReasonBadJSON, Detail: "an object where an array belongs"}
				}
				var known bool
				if sub, known = s.fields[key]; !known {
					return &Rejection{Reason: hearth.ReasonUnknownField, Detail: fmt.Sprintf("unknown field %q", key)}
				}
			}
			if rej := walk(dec, sub, depth+1, isEnvelope); rej != nil {
				return rej
			}
		}
	case '[':
		if s != nil && s.elem == nil {
			return &Rejection{Reason: hearth.ReasonBadJSON, Detail: "an array where an object belongs"}
		}
		var elem *shape
		if s != nil {
			elem = s.elem
		}
		for dec.More() {
			if rej := walk(dec, elem, depth+1, isEnvelope); rej != nil {
				return rej
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return &Rejection{Reason: hearth.ReasonBadJSON, Detail: err.Error()}
	}
	return nil
}

// peek makes a rejection carrying the id and version of payload, when an
// unverified look can find them.
func peek(payload []byte, reason hearth.Reason, detail string) *Rejection {
	return withID(&Rejection{Reason: reason, Detail: detail}, payload)
}

func withID(r *Rejection, payload []byte) *Rejection {
	var v struct {
		ID      json.RawMessage `json:"id"`
		Version json.RawMessage `json:"version"`
	}
	if !utf8.Valid(payload) || json.Unmarshal(payload, &v) != nil {
		return r
	}
	var id string
	if json.Unmarshal(v.ID, &id) == nil && len(id) <= MaxIDLength && utf8.ValidString(id) {
		r.ID = id
	}
	if n, err := strconv.ParseUint(string(v.Version), 10, 64); err == nil {
		r.Version = n
	}
	return r
}

// fields is a strictly checked JSON object, one raw value per key.
type fields map[string]json.RawMessage

func bad(reason hearth.Reason, format string, a ...any) *Rejection {
	return &Rejection{Reason: reason, Detail: fmt.Sprintf(format, a...)}
}

func decodeSetpoint(payload []byte) (hearth.Setpoint, *Rejection) {
	var f fields
	if err := json.Unmarshal(payload, &f); err != nil || f == nil {
		return hearth.Setpoint{}, bad(hearth.ReasonBadJSON, "a setpoint is a JSON object")
	}
	var sp hearth.Setpoint
	var rej *Rejection
	if sp.ID, rej = f.str("id", true); rej != nil {
		return hearth.Setpoint{}, rej
	}
	if sp.Gateway, rej = f.str("gateway", false); rej != nil {
		return hearth.Setpoint{}, rej
	}
	if sp.ID == "" || len(sp.ID) > MaxIDLength || strings.ContainsFunc(sp.ID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return hearth.Setpoint{}, bad(hearth.ReasonBadValue, "id: 1 to %d printable bytes", MaxIDLength)
	}
	if sp.Version, rej = f.version(); rej != nil {
		return hearth.Setpoint{}, rej
	}
	if sp.IssuedAt, rej = f.time("issued_at"); rej != nil {
		return hearth.Setpoint{}, rej
	}
	if sp.ValidUntil, rej = f.time("valid_until"); rej != nil {
		return hearth.Setpoint{}, rej
	}
	if !sp.ValidUntil.After(sp.IssuedAt) {
		return hearth.Setpoint{}, bad(hearth.ReasonBadValue, "valid_until %s is not after issued_at %s", sp.ValidUntil.Format(time.RFC3339), sp.IssuedAt.Format(time.RFC3339))
	}
	if sp.Mode, sp.PowerW, rej = f.modePower(""); rej != nil {
		return hearth.Setpoint{}, rej
	}
	fb, rej := f.str("fallback", true)
	if rej != nil {
		return hearth.Setpoint{}, rej
	}
	sp.Fallback = hearth.Mode(fb)
	switch {
	case !sp.Fallback.Valid():
		return hearth.Setpoint{}, bad(hearth.ReasonUnknownMode, "fallback %q is not a known mode", fb)
	case sp.Fallback == hearth.ModePower:
		return hearth.Setpoint{}, bad(hearth.ReasonBadValue, "fallback %q: a fallback carries no power; use idle, auto or self_consumption", fb)
	}
	if raw, ok := f["schedule"]; ok {
		if sp.Schedule, rej = decodeSchedule(raw, sp); rej != nil {
			return hearth.Setpoint{}, rej
		}
	}
	return sp, nil
}

func decodeSchedule(raw json.RawMessage, sp hearth.Setpoint) ([]hearth.ScheduleEntry, *Rejection) {
	var items []fields
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, bad(hearth.ReasonBadJSON, "schedule: an array of objects")
	}
	if len(items) > MaxScheduleEntries {
		return nil, bad(hearth.ReasonBadValue, "schedule: %d entries, at most %d", len(items), MaxScheduleEntries)
	}
	out := make([]hearth.ScheduleEntry, 0, len(items))
	for i, it := range items {
		if it == nil {
			return nil, bad(hearth.ReasonBadJSON, "schedule[%d]: an object", i)
		}
		var e hearth.ScheduleEntry
		var rej *Rejection
		at := fmt.Sprintf("schedule[%d].", i)
		if e.Start, rej = it.time("start"); rej != nil {
			return nil, prefix(rej, at)
		}
		if e.End, rej = it.time("end"); rej != nil {
			return nil, prefix(rej, at)
		}
		if e.Mode, e.PowerW, rej = it.modePower(at); rej != nil {
			return nil, rej
		}
		switch {
		case !e.End.After(e.Start):
			return nil, bad(hearth.ReasonBadValue, "%send is not after start", at)
		case e.Start.Before(sp.IssuedAt) || e.End.After(sp.ValidUntil):
			return nil, bad(hearth.ReasonBadValue, "%s: outside issued_at..valid_until", at)
		case i > 0 && e.Start.Before(out[i-1].End):
			return nil, bad(hearth.ReasonBadValue, "%sstart overlaps the previous entry or is out of order", at)
		}
		out = append(out, e)
	}
	return out, nil
}

func prefix(r *Rejection, at string) *Rejection {
	r.Detail = at + r.Detail
	return r
}

// str returns the string field name; required reports a missing one.
func (f fields) str(name string, required bool) (string, *Rejection) {
	raw, ok := f[name]
	if !ok || string(raw) == "null" {
		if required {
			return "", bad(hearth.ReasonBadValue, "%s: missing", name)
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", bad(hearth.ReasonBadJSON, "%s: want a string, got %s", name, clip(raw))
	}
	return s, nil
}

func (f fields) version() (uint64, *Rejection) {
	raw, ok := f["version"]
	if !ok || string(raw) == "null" {
		return 0, bad(hearth.ReasonBadValue, "version: missing")
	}
	if !isNumber(raw) {
		return 0, bad(hearth.ReasonBadJSON, "version: want an integer, got %s", clip(raw))
	}
	v, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil || v == 0 {
		return 0, bad(hearth.ReasonBadValue, "version: want an integer from 1 to %d, got %s", uint64(math.MaxUint64), clip(raw))
	}
	return v, nil
}

func (f fields) time(name string) (time.Time, *Rejection) {
	s, rej := f.str(name, true)
	if rej != nil {
		return time.Time{}, rej
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 2000 || t.Year() > 9999 {
		return time.Time{}, bad(hearth.ReasonBadValue, "%s: want an RFC 3339 time, got %q", name, s)
	}
	return t.UTC(), nil
}

// modePower reads mode and power_w: power mode needs power_w, the others
// must not carry one.
func (f fields) modePower(at string) (hearth.Mode, *hearth.Watts, *Rejection) {
	ms, rej := f.str("mode", true)
	if rej != nil {
		return "", nil, prefix(rej, at)
	}
	m := hearth.Mode(ms)
	if !m.Valid() {
		return "", nil, bad(hearth.ReasonUnknownMode, "%smode %q is not a known mode", at, ms)
	}
	raw, ok := f["power_w"]
	if ok && string(raw) == "null" {
		ok = false
	}
	switch {
	case m == hearth.ModePower && !ok:
		return "", nil, bad(hearth.ReasonBadValue, "%spower_w: missing for mode power", at)
	case m != hearth.ModePower && ok:
		return "", nil, bad(hearth.ReasonBadValue, "%spower_w: only mode power carries one, mode is %s", at, m)
	case !ok:
		return m, nil, nil
	}
	w, rej := power(raw)
	if rej != nil {
		return "", nil, prefix(rej, at)
	}
	return m, &w, nil
}

func power(raw json.RawMessage) (hearth.Watts, *Rejection) {
	if !isNumber(raw) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
				return 0, bad(hearth.ReasonBadValue, "power_w: %q is not a finite number", s)
			}
		}
		return 0, bad(hearth.ReasonBadJSON, "power_w: want a number, got %s", clip(raw))
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, bad(hearth.ReasonBadValue, "power_w: %s is not a finite float64", clip(raw))
	}
	if math.Abs(v) > MaxPowerW {
		return 0, bad(hearth.ReasonBadValue, "power_w: %g beyond ±%g", v, float64(MaxPowerW))
	}
	if v == 0 {
		v = 0 // negative zero is zero
	}
	return hearth.Watts(v), nil
}

// isNumber reports whether raw is a JSON number token.
func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'))
}

func clip(raw []byte) string {
	const n = 40
	if len(raw) > n {
		return string(raw[:n]) + "…"
	}
	return string(raw)
}

// SetpointKeys decodes a map of key id to base64 ed25519 public key, as
// uplink.setpoint_keys is written in the config.
func SetpointKeys(b64 map[string]string) (map[string]ed25519.PublicKey, error) {
	keys := make(map[string]ed25519.PublicKey, len(b64))
	var errs []error
	for id, s := range b64 {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		switch {
		case id == "":
			errs = append(errs, errors.New("setpoint key: empty key id"))
		case err != nil:
			errs = append(errs, fmt.Errorf("setpoint key %s: not base64: %v", id, err))
		case len(b) != ed25519.PublicKeySize:
			errs = append(errs, fmt.Errorf("setpoint key %s: an ed25519 public key is %d bytes, got %d", id, ed25519.PublicKeySize, len(b)))
		default:
			keys[id] = ed25519.PublicKey(b)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return keys, nil
}
