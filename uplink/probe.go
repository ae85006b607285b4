package uplink

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// CheckTopic is the subtopic a Probe publishes on and reads back,
// {prefix}/{gateway}/check. It is the only topic a probe writes to, and
// nothing consumes it, so a check touches nothing the cloud or the
// running agent sees.
const CheckTopic = "check"

// probeWait bounds each step of a Probe that waits for the broker, and
// echoWait how long it waits for its own message to come back.
const (
	probeWait = 10 * time.Second
	echoWait  = 5 * time.Second
)

// ProbeStep is one step of a broker check.
type ProbeStep struct {
	Name   string `json:"name"`           // dial, tls, connect, subscribe, publish
	OK     bool   `json:"ok"`             //
	Detail string `json:"detail"`         // what was found, or the error
	Hint   string `json:"hint,omitempty"` // what to check next, when it failed
}

// ProbeReport is what Probe found: the steps in order, up to the first
// that failed.
type ProbeReport struct {
	Broker string      `json:"broker"`
	OK     bool        `json:"ok"`
	Steps  []ProbeStep `json:"steps"`
}

func (r *ProbeReport) add(st ProbeStep) bool {
	r.Steps = append(r.Steps, st)
	return st.OK
}

// Probe checks, without disturbing anything, that a gateway with cfg can
// use its broker (with Brokers, the first node): the TCP connection, the TLS handshake against CAFile
// (and the broker's certificate), MQTT CONNECT with the gateway's
// credentials, SUBSCRIBE to its …/setpoint topic, and a message published
// on its …/check topic and read back, which proves the broker's ACL lets
// it write and read under its own prefix. (A broker that refuses the
// setpoint subscription says so in its SUBACK, and the probe reports it;
// Mosquitto grants it and delivers nothing, which only a setpoint from the
// cloud can show.) It connects as ClientID +
// "-check" with a clean session and no Last Will, so the running agent's
// session, its queued setpoints and its retained status are left alone;
// setpoints that arrive meanwhile are ignored.
func Probe(ctx context.Context, cfg Config) ProbeReport {
	r := ProbeReport{Broker: cfg.Broker}
	if nodes := cfg.Nodes(); len(nodes) > 0 {
		r.Broker = nodes[0]
	}
	tc, err := cfg.validate()
	// The client certificate and key not issued yet (a request pending):
	// the connection and the broker's certificate can be checked all the
	// same, without them; the MQTT steps, which need them, cannot.
	var pending error
	if err != nil && cfg.CertFile != "" {
		bare := cfg
		bare.CertFile, bare.KeyFile = "", ""
		if btc, berr := bare.validate(); berr == nil && btc != nil {
			tc, pending, err = btc, err, nil
		}
	}
	if err != nil {
		r.add(ProbeStep{Name: "config", Detail: err.Error(), Hint: "fix the uplink section: hearth config check"})
		return r
	}
	u, _ := url.Parse(r.Broker)
	tc = tlsFor(tc, u)
	wait := min(cfg.ConnectTimeout, probeWait)
	dctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", u.Host)
	if !r.add(dialStep(u.Host, conn, err)) {
		return r
	}
	if tc != nil {
		tconn := tls.Client(conn, tc)
		err := tconn.HandshakeContext(dctx)
		if !r.add(tlsStep(cfg, u.Hostname(), tconn, err)) {
			conn.Close()
			return r
		}
	}
	conn.Close()
	if pending != nil {
		r.add(ProbeStep{Name: "client certificate", Detail: pending.Error(),
			Hint: "the gateway's certificate is not there yet (hearth cert request): TCP and TLS were checked without it, login, subscribe and publish need it"})
		return r
	}

	base := cfg.TopicPrefix + "/" + cfg.GatewayID
	setpoint, check := base+"/setpoint", base+"/"+CheckTopic
	nonce := make([]byte, 8)
	rand.Read(nonce)
	probe, _ := json.Marshal(map[string]any{"probe": hex.EncodeToString(nonce), "ts": time.Now().UTC(), "client_id": cfg.ClientID + "-check"})
	back := make(chan struct{}, 1)
	opts := paho.NewClientOptions().
		AddBroker(r.Broker).
		SetClientID(cfg.ClientID + "-check").
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(wait).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) {}) // setpoints: not ours to act on
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !r.add(connectStep(cfg, tok, waitToken(ctx, tok, wait))) {
		return r
	}
	defer c.Disconnect(250)
	sub := c.SubscribeMultiple(map[string]byte{setpoint: 1, check: 1}, func(_ paho.Client, m paho.Message) {
		if m.Topic() == check && string(m.Payload()) == string(probe) {
			select {
			case back <- struct{}{}:
			default:
			}
		}
	})
	if !r.add(subscribeStep(setpoint, check, sub, waitToken(ctx, sub, wait))) {
		return r
	}
	pub := c.Publish(check, 1, false, probe)
	if err := waitToken(ctx, pub, wait); err != nil {
		r.add(ProbeStep{Name: "publish", Detail: fmt.Sprintf("publish on %s: %v", check, err),
			Hint: "the broker did not acknowledge a QoS 1 publish: is it overloaded, or does it drop the gateway for writing there?"})
		return r
	}
	t := time.NewTimer(echoWait)
	defer t.Stop()
	select {
	case <-back:
		r.add(ProbeStep{Name: "publish", OK: true, Detail: fmt.Sprintf("published on %s and read it back", check)})
	case <-t.C:
		r.add(ProbeStep{Name: "publish", Detail: fmt.Sprintf("the broker acknowledged a message on %s but did not deliver it back within %s", check, echoWait),
			Hint: fmt.Sprintf("the broker's ACL does not let the gateway write and read under %s/: see docs/mqtt.md, Broker setup (pattern readwrite %s/%%u/check)", base, cfg.TopicPrefix)})
		return r
	case <-ctx.Done():
		r.add(ProbeStep{Name: "publish", Detail: ctx.Err().Error()})
		return r
	}
	r.OK = true
	return r
}

// waitToken waits for tok until d or ctx ends.
func waitToken(ctx context.Context, tok paho.Token, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no answer within %s", d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func dialStep(host string, conn net.Conn, err error) ProbeStep {
	st := ProbeStep{Name: "dial"}
	if err == nil {
		st.OK, st.Detail = true, fmt.Sprintf("connected to %s (%s)", host, conn.RemoteAddr())
		return st
	}
	st.Detail = err.Error()
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &dns):
		st.Hint = fmt.Sprintf("cannot resolve %q: check uplink.broker and the gateway's DNS (resolvectl status)", dns.Name)
	case errors.Is(err, syscall.ECONNREFUSED):
		st.Hint = fmt.Sprintf("nothing listens at %s: wrong port (MQTT over TLS is usually 8883, plain 1883), or the broker is down", host)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		st.Hint = "no route to the broker: is the gateway on the network (ip route), and the address right?"
	case errors.As(err, &op) && op.Timeout(), errors.Is(err, context.DeadlineExceeded):
		st.Hint = fmt.Sprintf("no answer from %s: a firewall drops the connection, or the address is wrong", host)
	}
	return st
}

func tlsStep(cfg Config, host string, c *tls.Conn, err error) ProbeStep {
	st := ProbeStep{Name: "tls"}
	if err == nil {
		cs := c.ConnectionState()
		st.OK = true
		st.Detail = fmt.Sprintf("TLS %s", tlsVersion(cs.Version))
		if len(cs.PeerCertificates) > 0 {
			leaf := cs.PeerCertificates[0]
			st.Detail += fmt.Sprintf(", broker certificate %q issued by %q, valid until %s", leaf.Subject.CommonName,
				leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.DateOnly))
		}
		return st
	}
	st.Detail = err.Error()
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		ca := cfg.CAFile
		if ca == "" {
			ca = "the system's roots (no ca_file)"
		}
		st.Hint = fmt.Sprintf("the broker's certificate is not signed by %s: set uplink.ca_file to the operator's CA", ca)
	case errors.As(err, &hn):
		st.Hint = fmt.Sprintf("the broker's certificate is not for %q: use the host name it was issued for in uplink.broker", host)
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		st.Hint = "the broker's certificate is expired or not yet valid: check the gateway's clock (timedatectl), then the broker"
	case strings.Contains(err.Error(), "remote error"):
		st.Hint = "the broker refused the handshake: is uplink.cert_file signed by a CA it trusts?"
	case plainAnswer(err):
		st.Detail = fmt.Sprintf("%v (during the TLS handshake with %s)", err, host)
		st.Hint = "the broker answered without TLS: is this a plain port? use tcp:// or the TLS port (usually 8883)"
	}
	return st
}

// plainAnswer says whether a failed TLS handshake looks like a listener
// that does not speak TLS: a plain MQTT broker closes the connection on
// the ClientHello (EOF, reset), or answers with something that is no TLS
// record.
func plainAnswer(err error) bool {
	var rh tls.RecordHeaderError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &rh)
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	}
	return fmt.Sprintf("%#x", v)
}

func connectStep(cfg Config, tok paho.Token, err error) ProbeStep {
	st := ProbeStep{Name: "connect"}
	if err == nil {
		st.OK, st.Detail = true, fmt.Sprintf("MQTT 3.1.1 session as client %q", cfg.ClientID+"-check")
		if ct, ok := tok.(*paho.ConnectToken); ok && ct.SessionPresent() {
			st.Detail += " (the broker kept a session for it)"
		}
		return st
	}
	st.Detail = err.Error()
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "not authori"):
		st.Hint = "the broker does not authorise the gateway: its certificate's common name (or username) must be allowed, and be the gateway id when the ACL uses %u"
	case strings.Contains(msg, "bad user name or password"):
		st.Hint = "the broker refuses the username or password: check uplink.username and password_file"
	case strings.Contains(msg, "identifier rejected"):
		st.Hint = "the broker refuses the client id: check uplink.client_id"
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "tls"):
		st.Hint = "the broker wants a client certificate it trusts: set uplink.cert_file and key_file to the gateway's (hearth cert request)"
	case strings.Contains(msg, "eof"), strings.Contains(msg, "reset"):
		st.Hint = "the broker closed the connection: a client certificate it does not accept, or a listener that wants TLS (tls://) or not (tcp://)"
	}
	return st
}

func subscribeStep(setpoint, check string, tok paho.Token, err error) ProbeStep {
	st := ProbeStep{Name: "subscribe"}
	if err != nil {
		st.Detail = fmt.Sprintf("subscribe %s: %v", setpoint, err)
		return st
	}
	if s, ok := tok.(*paho.SubscribeToken); ok {
		for _, topic := range []string{setpoint, check} {
			if q := s.Result()[topic]; q > 1 {
				st.Detail = fmt.Sprintf("the broker refused the subscription to %s (code %#x)", topic, q)
				st.Hint = fmt.Sprintf("its ACL must let the gateway read %s: see docs/mqtt.md, Broker setup", topic)
				return st
			}
		}
	}
	st.OK, st.Detail = true, fmt.Sprintf("subscribed to %s and %s", setpoint, check)
	return st
}
