package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTopicPrefix    = "hearth/v1"
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = 2 * time.Minute
	DefaultPublishTimeout = 10 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	DefaultKeepAlive      = 60 * time.Second
	// DefaultHeartbeat is how often the retained online status is
	// published again with a fresh ts while connected: what the cloud
	// times a silent gateway out on.
	DefaultHeartbeat  = 60 * time.Second
	DefaultMaxPayload = 256 << 10
	// DefaultSetpointQueue and DefaultSetpointQueueBytes bound the setpoints
	// waiting for the handler: a burst of a thousand leases (a cloud
	// catching up) is taken whole, while memory stays bounded.
	DefaultSetpointQueue      = 2048
	DefaultSetpointQueueBytes = 1 << 20
	DefaultMaxInflight        = 8
	// maxPendingAcks bounds the acks kept for resending after a reconnect.
	maxPendingAcks = 64
)

// Config configures a Session. Zero durations and sizes take the defaults
// above; New rejects negative ones.
type Config struct {
	Broker string // tcp://host:port, or tls://host:port (also ssl://, mqtts://)
	// Brokers lists the nodes of a broker cluster, each like Broker; set
	// Broker or Brokers, not both. The session starts at a random node (a
	// fleet spreads over the cluster) and, when a connection is lost or an
	// attempt fails, tries the next node after a short jitter; only after
	// every node failed in turn does it back off (BackoffMin, BackoffMax).
	// All nodes use the same scheme: a list mixing tls and tcp is refused.
	Brokers   []string
	ClientID  string // default "hearth-" + GatewayID
	GatewayID string // required; one topic level, no wildcards

	TopicPrefix string // default "hearth/v1"

	Username, Password string

	// CAFile verifies the broker's certificate (system roots when empty);
	// CertFile and KeyFile are the gateway's client certificate. TLS only.
	CAFile, CertFile, KeyFile string

	// BootDelayMax bounds a random delay before the first connect, so that
	// a town's gateways rebooting together after an outage do not all hit
	// the broker in the same second. Zero means connect at once. It
	// applies at boot only: after a lost connection the next attempt
	// waits a random [0, BackoffMin].
	BootDelayMax time.Duration
	// BackoffMin and BackoffMax shape the delay between rounds of reconnect
	// attempts (a round tries every node once): uniformly random in
	// [0, min(BackoffMax, BackoffMin·2^n)]. Between nodes of one round, and
	// after a lost connection, the wait is random in [0, BackoffMin].
	BackoffMin, BackoffMax time.Duration

	PublishTimeout time.Duration // wait for a PUBACK; default 10s
	ConnectTimeout time.Duration // dial, TLS handshake, CONNACK, SUBACK; default 30s
	KeepAlive      time.Duration // MQTT keepalive; default 60s
	// Heartbeat is how often the retained online status (with ts and
	// heartbeat_s) is published again while connected; default 60s. A
	// broker node that dies takes the Last Will with it, and some brokers
	// do not send it on a graceful stop: a status whose ts is older than
	// three heartbeats tells the cloud the gateway is silent.
	Heartbeat     time.Duration
	MaxPayload    int // largest payload Publish accepts, bytes; default 256 KiB
	SetpointQueue int // inbound setpoints held for the handler; default 2048
	// SetpointQueueBytes bounds the payload bytes those setpoints hold;
	// default 1 MiB.
	SetpointQueueBytes int
	// MaxInflight bounds the telemetry messages sent and awaiting their
	// PUBACK at once; default 8.
	MaxInflight int
	// MaxSetpointBytes is the largest setpoint message accepted; default
	// and upper bound MaxSetpointBytes (64 KiB).
	MaxSetpointBytes int

	// TelemetryFormat is how readings are encoded: FormatLean (default)
	// or FormatJSON, the format of earlier versions, for consumers that
	// have not moved yet.
	TelemetryFormat string
	// TelemetryWindow is how long live readings are gathered into one
	// message (the deliverer's; the session announces it in the birth
	// record). Zero sends each poll cycle's readings at once.
	TelemetryWindow time.Duration

	// CleanSession asks the broker to forget the session on disconnect.
	// The default (false) keeps it, so that setpoints published while the
	// gateway is offline are delivered on reconnect, and checked like any
	// other; set it for brokers that cannot keep sessions.
	CleanSession bool

	Logger *slog.Logger // default discards
}

// Validate checks cfg as New would, without reading a file or touching
// the network: every problem is a hearth.FieldError named by its config
// key under uplink: (broker, topic_prefix, boot_delay, cert_file, …).
// CheckFiles checks the files it names.
func (cfg Config) Validate() error {
	_, errs := cfg.check()
	return errs.Err()
}

// CheckFiles reads the CA and client certificate files cfg names, as New
// does, and reports each that is missing, unreadable or not what it should
// be, as a hearth.FieldError (ca_file, cert_file).
func (cfg Config) CheckFiles() error {
	useTLS, errs := cfg.check()
	if len(errs) > 0 || !useTLS {
		return nil // nothing to load, or Validate says why
	}
	_, err := cfg.tlsConfig()
	return err
}

// validate fills defaults and checks cfg, reporting every problem at once,
// and loads the TLS configuration. It makes no network call; it reads the
// certificate files.
func (cfg *Config) validate() (*tls.Config, error) {
	useTLS, errs := cfg.check()
	if len(errs) > 0 {
		return nil, errs
	}
	if !useTLS {
		return nil, nil
	}
	return cfg.tlsConfig()
}

// check fills defaults and checks every setting but the files, and says
// whether the broker is reached over TLS.
func (cfg *Config) check() (useTLS bool, errs hearth.FieldErrors) {

	useTLS, errs = cfg.checkNodes()
	if cfg.GatewayID == "" {
		errs.Add("gateway_id", "required")
	} else if strings.ContainsAny(cfg.GatewayID, "/+#") {
		errs.Add("gateway_id", "%q must not contain '/', '+' or '#'", cfg.GatewayID)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "hearth-" + cfg.GatewayID
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
	}
	cfg.TopicPrefix = strings.TrimSuffix(cfg.TopicPrefix, "/")
	if strings.ContainsAny(cfg.TopicPrefix, "+#") || strings.HasPrefix(cfg.TopicPrefix, "/") || cfg.TopicPrefix == "" {
		errs.Add("topic_prefix", "%q: no wildcards ('+', '#'), no leading '/'", cfg.TopicPrefix)
	}

	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"boot_delay", &cfg.BootDelayMax, 0},
		{"backoff_min", &cfg.BackoffMin, DefaultBackoffMin},
		{"backoff_max", &cfg.BackoffMax, DefaultBackoffMax},
		{"publish_timeout", &cfg.PublishTimeout, DefaultPublishTimeout},
		{"connect_timeout", &cfg.ConnectTimeout, DefaultConnectTimeout},
		{"keepalive", &cfg.KeepAlive, DefaultKeepAlive},
		{"heartbeat", &cfg.Heartbeat, DefaultHeartbeat},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0:
			errs.Add(d.name, "must not be negative")
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.BackoffMin > cfg.BackoffMax {
		errs.Add("backoff_min", "%v is above backoff_max %v", cfg.BackoffMin, cfg.BackoffMax)
	}
	if cfg.KeepAlive > 0 && cfg.KeepAlive < time.Second {
		errs.Add("keepalive", "%v: at least 1s", cfg.KeepAlive)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"max_payload", cfg.MaxPayload}, {"setpoint_queue", cfg.SetpointQueue}, {"max_inflight", cfg.MaxInflight}, {"max_setpoint_bytes", cfg.MaxSetpointBytes}} {
		if n.v < 0 {
			errs.Add(n.name, "must not be negative")
		}
	}
	if cfg.MaxSetpointBytes == 0 || cfg.MaxSetpointBytes > MaxSetpointBytes {
		cfg.MaxSetpointBytes = MaxSetpointBytes
	}
	switch cfg.TelemetryFormat {
	case "":
		cfg.TelemetryFormat = FormatLean
	case FormatLean, FormatJSON:
	default:
		errs.Add("telemetry_format", "%q is not one of %s, %s", cfg.TelemetryFormat, FormatLean, FormatJSON)
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.SetpointQueue == 0 {
		cfg.SetpointQueue = DefaultSetpointQueue
	}
	if cfg.SetpointQueueBytes <= 0 {
		cfg.SetpointQueueBytes = DefaultSetpointQueueBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		errs.Add("cert_file", "cert_file and key_file go together")
	}
	if nodes := cfg.Nodes(); !useTLS && len(nodes) > 0 && (cfg.CAFile != "" || cfg.CertFile != "") {
		field := "ca_file"
		if cfg.CertFile != "" {
			field = "cert_file"
		}
		errs.Add(field, "set, but broker %q is not tls://: the certificates would not be used", nodes[0])
	}
	return useTLS, errs
}

// tlsConfig loads the CA and the client certificate of a TLS broker.
func (cfg *Config) tlsConfig() (*tls.Config, error) {
	var errs hearth.FieldErrors
	// The server name is each node's own: set when dialling it (tlsFor).
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			errs.Add("ca_file", "%v", err)
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs.Add("ca_file", "%s: no PEM certificate", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
	}
	// Each missing file is reported on its own line: while a certificate
	// request is pending, both are usually missing.
	pairReadable := cfg.CertFile != "" && cfg.KeyFile != ""
	for _, f := range []struct{ field, path string }{{"cert_file", cfg.CertFile}, {"key_file", cfg.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs.Add(f.field, "%v", err)
			pairReadable = false
		}
	}
	if pairReadable {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			errs.Add("cert_file", "client certificate: %v", err)
		} else {
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return tc, nil
}

// Nodes returns the broker URLs the session connects to: Brokers, or
// Broker alone.
func (cfg Config) Nodes() []string {
	if len(cfg.Brokers) > 0 {
		return cfg.Brokers
	}
	if cfg.Broker != "" {
		return []string{cfg.Broker}
	}
	return nil
}

// checkNodes checks Broker and Brokers: one of them set, every URL
// tcp:// or tls:// with a host and port, no node twice, one scheme for
// all. It says whether the nodes are reached over TLS.
func (cfg Config) checkNodes() (useTLS bool, errs hearth.FieldErrors) {
	switch {
	case cfg.Broker != "" && len(cfg.Brokers) > 0:
		errs.Add("brokers", "set broker (one node) or brokers (a list), not both")
		return false, errs
	case cfg.Broker == "" && len(cfg.Brokers) == 0:
		errs.Add("broker", "required (tcp://host:port or tls://host:port; brokers: a list of them for a cluster)")
		return false, errs
	}
	seen := map[string]int{}
	tlsOf := -1 // useTLS of the first good node, -1 before it
	for i, b := range cfg.Nodes() {
		field := "broker"
		if len(cfg.Brokers) > 0 {
			field = fmt.Sprintf("brokers[%d]", i)
		}
		u, err := url.Parse(b)
		switch {
		case b == "":
			errs.Add(field, "empty (want tcp://host:port or tls://host:port)")
			continue
		case err != nil:
			errs.Add(field, "%q: %v", b, err)
			continue
		}
		secure := false
		switch u.Scheme {
		case "tcp", "mqtt":
		case "tls", "ssl", "mqtts":
			secure = true
		default:
			errs.Add(field, "%q: scheme must be tcp or tls (want tcp://host:port or tls://host:port)", b)
			continue
		}
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Hostname() == "" {
			errs.Add(field, "%q: want tcp://host:port or tls://host:port", b)
			continue
		}
		if j, dup := seen[u.Host]; dup {
			errs.Add(field, "%q: the same node as brokers[%d]", b, j)
			continue
		}
		seen[u.Host] = i
		switch {
		case tlsOf < 0:
			if tlsOf = 0; secure {
				tlsOf = 1
			}
		case secure != (tlsOf == 1):
			errs.Add(field, "%q: every node uses the same scheme (a tcp:// node would let a failover drop TLS)", b)
		}
	}
	return tlsOf == 1, errs
}

// tlsFor returns tc for dialling u: a copy naming u's host, which the
// broker's certificate must carry. nil stays nil (no TLS).
func tlsFor(tc *tls.Config, u *url.URL) *tls.Config {
	if tc == nil {
		return nil
	}
	c := tc.Clone()
	c.ServerName = u.Hostname()
	return c
}
