package uplink

import (
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

func TestNewRejectsBadConfig(t *testing.T) {
	certs := harness.GenerateCerts(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no broker", Config{GatewayID: "gw"}, "broker: required"},
		{"bad scheme", Config{Broker: "http://h:1", GatewayID: "gw"}, "scheme"},
		{"no port", Config{Broker: "tcp://h", GatewayID: "gw"}, "host:port"},
		{"no gateway", Config{Broker: "tcp://h:1"}, "gateway_id: required"},
		{"wildcard gateway", Config{Broker: "tcp://h:1", GatewayID: "a/#"}, "gateway_id"},
		{"wildcard prefix", Config{Broker: "tcp://h:1", GatewayID: "gw", TopicPrefix: "x/+"}, "topic_prefix"},
		{"negative", Config{Broker: "tcp://h:1", GatewayID: "gw", PublishTimeout: -1}, "publish_timeout"},
		{"min above max", Config{Broker: "tcp://h:1", GatewayID: "gw", BackoffMin: time.Hour, BackoffMax: time.Second}, "backoff_min"},
		{"cert without key", Config{Broker: "tls://h:1", GatewayID: "gw", CertFile: certs.ClientCertFile}, "go together"},
		{"certs on plain tcp", Config{Broker: "tcp://h:1", GatewayID: "gw", CAFile: certs.CAFile}, "not tls"},
		{"missing ca", Config{Broker: "tls://h:1", GatewayID: "gw", CAFile: "/nonexistent/ca.pem"}, "ca_file"},
		{"ca not pem", Config{Broker: "tls://h:1", GatewayID: "gw", CAFile: certs.ClientKeyFile}, "no PEM certificate"},
		{"broker and brokers", Config{Broker: "tcp://h:1", Brokers: []string{"tcp://h:2"}, GatewayID: "gw"}, "brokers: set broker (one node) or brokers (a list), not both"},
		{"bad node", Config{Brokers: []string{"tcp://h:1", "tcp://h"}, GatewayID: "gw"}, "brokers[1]: \"tcp://h\": want"},
		{"node twice", Config{Brokers: []string{"tcp://h:1", "tcp://h:1"}, GatewayID: "gw"}, "brokers[1]: \"tcp://h:1\": the same node as brokers[0]"},
		{"schemes mixed", Config{Brokers: []string{"tls://h:1", "tcp://h:2"}, GatewayID: "gw"}, "brokers[1]: \"tcp://h:2\": every node uses the same scheme"},
		{"empty node", Config{Brokers: []string{"tcp://h:1", ""}, GatewayID: "gw"}, "brokers[1]: empty"},
		{"key mismatch", Config{Broker: "tls://h:1", GatewayID: "gw", CertFile: certs.ClientCertFile, KeyFile: certs.ServerKeyFile}, "client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewReportsEveryError(t *testing.T) {
	_, err := New(Config{Broker: "ftp://x", TopicPrefix: "#"})
	if err == nil {
		t.Fatal("New() = nil error")
	}
	for _, want := range []string{"scheme", "gateway_id", "topic_prefix"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", GatewayID: "gw7", TopicPrefix: "hearth/v1/"})
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.ClientID != "hearth-gw7" || c.BackoffMin != time.Second || c.BackoffMax != 2*time.Minute ||
		c.PublishTimeout != 10*time.Second || c.BootDelayMax != 0 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if s.topics.telemetry != "hearth/v1/gw7/telemetry" || s.topics.backfill != "hearth/v1/gw7/telemetry/backfill" ||
		s.topics.status != "hearth/v1/gw7/status" || s.topics.setpoint != "hearth/v1/gw7/setpoint" {
		t.Errorf("topics = %+v", s.topics)
	}
}
