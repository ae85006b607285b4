// Package faults holds the fault-injection scenarios that prove hearth's
// claims from the outside: the real agent binary runs against a real
// Mosquitto and a simulated device on real sockets, faults are injected
// for real (broker killed, network cut or made slow and lossy, agent
// SIGKILLed, device misbehaving, disk full, a burst of setpoints), and the
// invariants are checked on what the broker and the device saw:
//
//   - every seq the agent assigned arrives on the broker, as a reading or
//     inside an aggregate's seq range, or is named by a gap event;
//   - no command written to the device breaks a safety limit;
//   - the agent's resident memory stays bounded.
//
// `go test ./faults/` runs each scenario in a short form; with
// HEARTH_FAULTS_FULL=1 (make faults) they run for minutes. See docs/proof.md.
package faults
