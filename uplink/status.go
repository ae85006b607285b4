package uplink

import (
	"encoding/json"
	"fmt"
	"time"
)

// Birth is what the gateway announces, retained, on {prefix}/{gateway}/status
// each time it connects.
type Birth struct {
	Version string         // agent version; default hearth.Version
	Devices []DeviceInfo   // identities of the devices the agent talks to
	Profile string         // control/safety profile name
	Limits  map[string]any // effective safety limits, as the cloud should see them
	// Buffer is the buffer's health and wear (bytes written, commits per
	// hour) as of the last refresh of the record.
	Buffer map[string]any
}

// DeviceInfo identifies one device behind the gateway.
type DeviceInfo struct {
	Name         string `json:"name"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
	Serial       string `json:"serial,omitempty"`
	Firmware     string `json:"firmware,omitempty"`
}

// statusMsg is the payload of …/status. "online" carries the birth record;
// "offline" (clean shutdown, or the Will) carries the reason.
type statusMsg struct {
	State   string     `json:"state"`
	Gateway string     `json:"gateway"`
	Version string     `json:"version,omitempty"`
	TS      *time.Time `json:"ts,omitempty"`
	// HeartbeatS is the interval at which an online status is published
	// again: the cloud times the gateway out after three.
	HeartbeatS int `json:"heartbeat_s,omitempty"`
	// Telemetry announces the encoding of …/telemetry: how to decode the
	// readings that follow.
	Telemetry *telemetryInfo  `json:"telemetry,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Profile   string          `json:"profile,omitempty"`
	Devices   *[]DeviceInfo   `json:"devices,omitempty"`
	Limits    json.RawMessage `json:"limits,omitempty"`
	Buffer    json.RawMessage `json:"buffer,omitempty"`
}

// telemetryInfo is the "telemetry" of an online status.
type telemetryInfo struct {
	Format   string `json:"format"`         // lean or json
	Lean     int    `json:"lean,omitempty"` // LeanVersion, for lean
	WindowMS int64  `json:"window_ms"`      // live readings are gathered this long into one message
}

// SetBirth sets the birth record. If the session is connected it is
// republished at once; otherwise on the next connect. It returns an error,
// keeping the previous record, if Limits cannot be encoded as JSON.
func (s *Session) SetBirth(b Birth) error {
	if _, err := json.Marshal(b.Limits); err != nil {
		return fmt.Errorf("uplink birth limits: %w", err)
	}
	if _, err := json.Marshal(b.Buffer); err != nil {
		return fmt.Errorf("uplink birth buffer: %w", err)
	}
	b.Devices = append([]DeviceInfo(nil), b.Devices...)
	s.mu.Lock()
	if b.Version == "" {
		b.Version = s.birth.Version
	}
	s.birth = b
	connected := s.cur != nil
	s.mu.Unlock()
	if connected {
		select {
		case s.birthC <- struct{}{}:
		default: // a republish is already pending
		}
	}
	return nil
}

// statusPayload encodes a status message. The Will is encoded once per
// connection and published whenever the broker sees it lost, so it
// carries no timestamp (stamped=false). Called with s.mu held.
func (s *Session) statusPayload(state, reason string, stamped bool) []byte {
	m := statusMsg{State: state, Gateway: s.cfg.GatewayID, Version: s.birth.Version, Reason: reason}
	if stamped {
		now := time.Now().UTC()
		m.TS = &now
	}
	if state == "online" {
		m.HeartbeatS = int(s.cfg.Heartbeat.Round(time.Second) / time.Second)
		m.Telemetry = &telemetryInfo{Format: s.cfg.TelemetryFormat, WindowMS: s.cfg.TelemetryWindow.Milliseconds()}
		if m.Telemetry.Format == FormatLean {
			m.Telemetry.Lean = LeanVersion
		}
		devs := s.birth.Devices
		if devs == nil {
			devs = []DeviceInfo{}
		}
		m.Devices = &devs
		m.Profile = s.birth.Profile
		if len(s.birth.Limits) > 0 {
			m.Limits, _ = json.Marshal(s.birth.Limits) // checked by SetBirth
		}
		if len(s.birth.Buffer) > 0 {
			m.Buffer, _ = json.Marshal(s.birth.Buffer) // checked by SetBirth
		}
	}
	b, err := json.Marshal(m)
	if err != nil { // not expected: Limits was checked by SetBirth
		s.log.Error("encode status", "err", err)
		b, _ = json.Marshal(statusMsg{State: state, Gateway: s.cfg.GatewayID, Version: s.birth.Version, TS: m.TS, Reason: reason})
	}
	return b
}
