package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTopicPrefix    = "hearth/v1"
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = 2 * time.Minute
	DefaultPublishTimeout = 10 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	DefaultKeepAlive      = 60 * time.Second
	DefaultMaxPayload     = 256 << 10
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
	Broker    string // tcp://host:port, or tls://host:port (also ssl://, mqtts://)
	ClientID  string // default "hearth-" + GatewayID
	GatewayID string // required; one topic level, no wildcards

	TopicPrefix string // default "hearth/v1"

	Username, Password string

	// CAFile verifies the broker's certificate (system roots when empty);
	// CertFile and KeyFile are the gateway's client certificate. TLS only.
	CAFile, CertFile, KeyFile string

	// BootDelayMax bounds a random delay before the first connect, so that
	// a town's gateways rebooting together after an outage do not all hit
	// the broker in the same second. Zero means connect at once.
	BootDelayMax time.Duration
	// BackoffMin and BackoffMax shape the delay between reconnect attempts:
	// uniformly random in [0, min(BackoffMax, BackoffMin·2^n)].
	BackoffMin, BackoffMax time.Duration

	PublishTimeout time.Duration // wait for a PUBACK; default 10s
	ConnectTimeout time.Duration // dial, TLS handshake, CONNACK, SUBACK; default 30s
	KeepAlive      time.Duration // MQTT keepalive; default 60s
	MaxPayload     int           // largest payload Publish accepts, bytes; default 256 KiB
	SetpointQueue  int           // inbound setpoints held for the handler; default 2048
	// SetpointQueueBytes bounds the payload bytes those setpoints hold;
	// default 1 MiB.
	SetpointQueueBytes int
	// MaxInflight bounds the telemetry messages sent and awaiting their
	// PUBACK at once; default 8.
	MaxInflight int
	// MaxSetpointBytes is the largest setpoint message accepted; default
	// and upper bound MaxSetpointBytes (64 KiB).
	MaxSetpointBytes int

	// CleanSession asks the broker to forget the session on disconnect.
	// The default (false) keeps it, so that setpoints published while the
	// gateway is offline are delivered on reconnect, and checked like any
	// other; set it for brokers that cannot keep sessions.
	CleanSession bool

	Logger *slog.Logger // default discards
}

// validate fills defaults and checks cfg, reporting every problem at once.
// It makes no network call; it reads the certificate files.
func (cfg *Config) validate() (*tls.Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	var useTLS bool
	u, err := url.Parse(cfg.Broker)
	switch {
	case cfg.Broker == "":
		bad("broker: required")
	case err != nil:
		bad("broker: %v", err)
	default:
		switch u.Scheme {
		case "tcp", "mqtt":
		case "tls", "ssl", "mqtts":
			useTLS = true
		default:
			bad("broker %q: scheme must be tcp or tls", cfg.Broker)
		}
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Hostname() == "" {
			bad("broker %q: want scheme://host:port", cfg.Broker)
		}
	}

	if cfg.GatewayID == "" {
		bad("gateway_id: required")
	} else if strings.ContainsAny(cfg.GatewayID, "/+#") {
		bad("gateway_id %q: must not contain '/', '+' or '#'", cfg.GatewayID)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "hearth-" + cfg.GatewayID
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
	}
	cfg.TopicPrefix = strings.TrimSuffix(cfg.TopicPrefix, "/")
	if strings.ContainsAny(cfg.TopicPrefix, "+#") || strings.HasPrefix(cfg.TopicPrefix, "/") || cfg.TopicPrefix == "" {
		bad("topic_prefix %q: no wildcards, no leading '/'", cfg.TopicPrefix)
	}

	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"boot_delay_max", &cfg.BootDelayMax, 0},
		{"backoff_min", &cfg.BackoffMin, DefaultBackoffMin},
		{"backoff_max", &cfg.BackoffMax, DefaultBackoffMax},
		{"publish_timeout", &cfg.PublishTimeout, DefaultPublishTimeout},
		{"connect_timeout", &cfg.ConnectTimeout, DefaultConnectTimeout},
		{"keepalive", &cfg.KeepAlive, DefaultKeepAlive},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0:
			bad("%s: %v is negative", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.BackoffMin > cfg.BackoffMax {
		bad("backoff_min %v is above backoff_max %v", cfg.BackoffMin, cfg.BackoffMax)
	}
	if cfg.KeepAlive > 0 && cfg.KeepAlive < time.Second {
		bad("keepalive %v: at least 1s", cfg.KeepAlive)
	}
	if cfg.MaxPayload < 0 || cfg.SetpointQueue < 0 || cfg.MaxInflight < 0 || cfg.MaxSetpointBytes < 0 {
		bad("max_payload, setpoint_queue, max_inflight and max_setpoint_bytes must not be negative")
	}
	if cfg.MaxSetpointBytes == 0 || cfg.MaxSetpointBytes > MaxSetpointBytes {
		cfg.MaxSetpointBytes = MaxSetpointBytes
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
		bad("cert_file and key_file: give both or neither")
	}
	if !useTLS && (cfg.CAFile != "" || cfg.CertFile != "") {
		bad("ca_file/cert_file set but broker %q is not tls://", cfg.Broker)
	}
	var tc *tls.Config
	if useTLS && u != nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				bad("ca_file: %v", err)
			} else {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					bad("ca_file %s: no PEM certificate", cfg.CAFile)
				}
				tc.RootCAs = pool
			}
		}
		if cfg.CertFile != "" && cfg.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				bad("client certificate: %v", err)
			} else {
				tc.Certificates = []tls.Certificate{cert}
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("uplink config: %w", errors.Join(errs...))
	}
	return tc, nil
}
