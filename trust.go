package hearth

// Reason codes of the gateway's trust and durability checks, carried in
// setpoint acks and setpoint_rejected events like the others.
const (
	// ReasonNotDurable: the gateway could not write the highest version
	// (or the lease) to its state file (disk full, read-only medium), so
	// a restart would forget it and the replay guard with it: the lease is
	// refused, nothing runs of it.
	ReasonNotDurable Reason = "not_durable"
	// ReasonNoKeys: keys were configured on this gateway and none is in
	// force now (every one revoked or removed): every cloud lease is
	// refused, signed or not, until a key is configured again (or
	// uplink.allow_unsigned: true re-allows unsigned leases).
	ReasonNoKeys Reason = "no_keys"
)
