package main

import (
	"fmt"
	"io"
)

// cmdModbus is `hearth modbus read|scan`.
func cmdModbus(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hearth modbus: not available in this build")
	return exitFailed
}
