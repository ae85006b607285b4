// Package hw owns the gateway's hardware beyond the Modbus links: the
// optional GPIO pins (an emergency-stop input, a contactor output, a status
// LED) through periph, the Linux hardware watchdog, systemd's notify
// socket (READY, WATCHDOG, STOPPING), and the clock: the wall and
// monotonic readings and whether the kernel says NTP disciplines it.
//
// It knows nothing of safety rules or the agent's loops: the agent tells it
// what to drive and when the loops are healthy. hw imports only the
// standard library, periph and the root package's Instant.
package hw
