package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/cloud"
	"github.com/hearth-energy/hearth/uplink"
)

// Exit codes of `hearthsim cloud send`.
const (
	exitOK       = 0 // applied or clamped
	exitError    = 1 // could not send
	exitUsage    = 2
	exitRefused  = 3 // acked with another result
	exitNoAck    = 4 // no ack within --wait
	cloudUsage   = "usage: hearthsim cloud keygen|send|watch [flags]   (-h on each for flags)"
	defaultLease = 15 * time.Minute
)

// cmdCloud is `hearthsim cloud keygen|send|watch`: the operator's side of
// the MQTT contract.
func cmdCloud(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, cloudUsage)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, cloudUsage)
		return exitOK
	case "keygen":
		return cmdKeygen(args[1:], stdout, stderr)
	case "send":
		return cmdSend(ctx, args[1:], stdout, stderr)
	case "watch":
		return cmdWatch(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "hearthsim cloud: unknown command %q\n%s\n", args[0], cloudUsage)
	return exitUsage
}

// cmdKeygen writes a fresh ed25519 private key (PKCS #8 PEM, mode 0600)
// and prints the public key as an uplink.setpoint_keys entry.
func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hearthsim cloud keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "setpoint.key", "write the private key to this file (refuses to overwrite)")
	keyID := fs.String("key-id", "ops-1", "the key id gateways will know the key by")
	asJSON := fs.Bool("json", false, "print {\"key_id\",\"public_key\",\"private_key_file\"} as JSON")
	if code, ok := parse(fs, args, true, stdout, stderr); !ok {
		return code
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim cloud keygen:", err)
		return exitError
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim cloud keygen:", err)
		return exitError
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim cloud keygen:", err)
		return exitError
	}
	if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Close()); err != nil {
		fmt.Fprintln(stderr, "hearthsim cloud keygen:", err)
		return exitError
	}
	b64 := base64.StdEncoding.EncodeToString(pub)
	if *asJSON {
		json.NewEncoder(stdout).Encode(map[string]string{"key_id": *keyID, "public_key": b64, "private_key_file": *out})
		return exitOK
	}
	fmt.Fprintf(stderr, "private key written to %s; add this to each gateway's config under uplink.setpoint_keys:\n", *out)
	fmt.Fprintf(stdout, "%s: %s\n", *keyID, b64)
	return exitOK
}

// readPrivateKey reads a PKCS #8 PEM ed25519 key as keygen writes it.
func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return priv, nil
}

// cmdSend builds (or reads) a setpoint lease, signs it when --key is
// given, publishes it to one gateway and prints the ack that comes back.
func cmdSend(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hearthsim cloud send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokerURL := fs.String("broker", "tcp://127.0.0.1:1883", "broker URL (tcp:// or tls://); the nodes of a cluster comma-separated")
	gateway := fs.String("gateway", "", "gateway id (required)")
	prefix := fs.String("prefix", uplink.DefaultTopicPrefix, "topic prefix")
	keyFile := fs.String("key", "", "sign with this ed25519 private key (from keygen); unsigned when empty")
	keyID := fs.String("key-id", "ops-1", "key id to name in the envelope")
	file := fs.String("file", "", "send this lease JSON file as is (- for stdin) instead of building one from flags")
	mode := fs.String("mode", "power", "mode: power, idle, auto, self_consumption")
	power := fs.Float64("power", 0, "power_w for mode power (W, positive discharges)")
	forDur := fs.Duration("for", defaultLease, "lease length: valid_until = now + this")
	fallback := fs.String("fallback", "auto", "fallback when the lease ends")
	id := fs.String("id", "", "lease id (random when empty)")
	version := fs.Uint64("version", 0, "lease version (now in Unix milliseconds when 0)")
	waitFor := fs.Duration("wait", 10*time.Second, "how long to wait for the ack (0: do not wait)")
	resend := fs.Duration("resend", 3*time.Second, "send the same lease (same version) again after this without an ack, until --wait ends (0: never); the gateway acks a repeat duplicate")
	caFile := fs.String("tls-ca", "", "CA file for a tls:// broker")
	certFile := fs.String("tls-cert", "", "client certificate for a tls:// broker")
	certKey := fs.String("tls-key", "", "client certificate key")
	if code, ok := parse(fs, args, true, stdout, stderr); !ok {
		return code
	}
	if *gateway == "" || strings.ContainsAny(*gateway, "/+#") {
		fmt.Fprintln(stderr, "hearthsim cloud send: --gateway ID is required (one topic level)")
		return exitUsage
	}

	var payload []byte
	var err error
	if *file != "" {
		if *file == "-" {
			payload, err = io.ReadAll(os.Stdin)
		} else {
			payload, err = os.ReadFile(*file)
		}
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim cloud send:", err)
			return exitError
		}
		payload = bytes.TrimSpace(payload)
	} else {
		payload, err = buildLease(*gateway, *id, *version, hearth.Mode(*mode), *power, *forDur, hearth.Mode(*fallback))
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim cloud send:", err)
			return exitUsage
		}
	}
	var ref struct {
		ID      string `json:"id"`
		Version uint64 `json:"version"`
	}
	_ = json.Unmarshal(payload, &ref) // best effort: only to match the ack
	msg := payload
	if *keyFile != "" {
		priv, err := readPrivateKey(*keyFile)
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim cloud send:", err)
			return exitError
		}
		if msg, err = uplink.SignSetpoint(payload, *keyID, priv); err != nil {
			fmt.Fprintln(stderr, "hearthsim cloud send:", err)
			return exitError
		}
	}

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := cloud.DialWith(dctx, *brokerURL, "hearthsim-send-"+randomHex(6),
		cloud.Options{CAFile: *caFile, CertFile: *certFile, KeyFile: *certKey})
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim cloud send:", err)
		return exitError
	}
	defer c.Close()
	base := *prefix + "/" + *gateway
	acks := make(chan hearth.Ack, 16)
	if *waitFor > 0 {
		err := c.Subscribe(dctx, base+"/setpoint/ack", func(m cloud.Message) {
			var a hearth.Ack
			if json.Unmarshal(m.Payload, &a) == nil && a.ID == ref.ID && a.Version == ref.Version {
				select {
				case acks <- a:
				default:
				}
			}
		})
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim cloud send:", err)
			return exitError
		}
	}
	if err := c.Publish(dctx, base+"/setpoint", msg, false); err != nil {
		fmt.Fprintln(stderr, "hearthsim cloud send:", err)
		return exitError
	}
	fmt.Fprintf(stderr, "sent %s version %d to %s (%d bytes, signed: %t)\n", ref.ID, ref.Version, base+"/setpoint", len(msg), *keyFile != "")
	if *waitFor == 0 {
		return exitOK
	}
	deadline := time.After(*waitFor)
	var again <-chan time.Time
	if *resend > 0 {
		t := time.NewTicker(*resend)
		defer t.Stop()
		again = t.C
	}
	for {
		select {
		case a := <-acks:
			b, _ := json.Marshal(a)
			fmt.Fprintln(stdout, string(b))
			// duplicate: a resend of the lease the gateway already runs.
			if a.Result == hearth.ResultApplied || a.Result == hearth.ResultClamped || a.Result == hearth.ResultDuplicate {
				return exitOK
			}
			return exitRefused
		case <-again:
			// The contract's rule for an unacked lease: send it again,
			// same version (the ack, or the lease, may have been lost).
			pctx, pcancel := context.WithTimeout(ctx, *resend)
			err := c.Publish(pctx, base+"/setpoint", msg, false)
			pcancel()
			if err != nil {
				fmt.Fprintf(stderr, "hearthsim cloud send: resend %s version %d: %v\n", ref.ID, ref.Version, err)
			} else {
				fmt.Fprintf(stderr, "no ack yet: sent %s version %d again\n", ref.ID, ref.Version)
			}
		case <-deadline:
			fmt.Fprintf(stderr, "hearthsim cloud send: no ack for %s version %d within %v\n", ref.ID, ref.Version, *waitFor)
			return exitNoAck
		case <-ctx.Done():
			return exitNoAck
		}
	}
}

// buildLease makes a lease from the send flags, issued now.
func buildLease(gateway, id string, version uint64, mode hearth.Mode, power float64, d time.Duration, fallback hearth.Mode) ([]byte, error) {
	if !mode.Valid() {
		return nil, fmt.Errorf("--mode %q: want power, idle, auto or self_consumption", mode)
	}
	if d <= 0 {
		return nil, fmt.Errorf("--for %v: must be positive", d)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	if id == "" {
		id = randomHex(8)
	}
	if version == 0 {
		version = uint64(now.UnixMilli())
	}
	sp := hearth.Setpoint{ID: id, Version: version, Gateway: gateway, IssuedAt: now, ValidUntil: now.Add(d), Mode: mode, Fallback: fallback}
	if mode == hearth.ModePower {
		w := hearth.Watts(power)
		sp.PowerW = &w
	}
	return json.Marshal(sp)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
