package main

import (
	"fmt"
	"io"
)

// cmdConfigInit is `hearth config init`.
func cmdConfigInit(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hearth config init: not available in this build")
	return exitFailed
}

// cmdCert is `hearth cert request`.
func cmdCert(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hearth cert: not available in this build")
	return exitFailed
}
