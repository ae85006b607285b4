package hw

import "syscall"

// staUnsync is the kernel's STA_UNSYNC flag: the clock is not NTP-disciplined.
const staUnsync = 0x0040

// kernelClockSynced asks the kernel whether NTP has disciplined the clock.
func kernelClockSynced() bool {
	var tx syscall.Timex
	state, err := syscall.Adjtimex(&tx)
	if err != nil {
		return false
	}
	const timeError = 5 // TIME_ERROR: clock not synchronised
	return state != timeError && tx.Status&staUnsync == 0
}
