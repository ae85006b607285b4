// Package hw owns the gateway's hardware beyond the Modbus links: the
// optional GPIO pins (an emergency-stop input, a contactor output, a status
// LED) through periph, the Linux hardware watchdog, and systemd's notify
// socket (READY, WATCHDOG, STOPPING).
//
// It knows nothing of safety rules or the agent's loops: the agent tells it
// what to drive and when the loops are healthy. hw imports only the
// standard library and periph.
package hw
