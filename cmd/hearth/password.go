package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hearth-energy/hearth/config"
)

const hashPasswordUsage = `usage: hearth config hash-password < FILE

Reads a password from standard input (one line; typed at a terminal it is
not shown) and prints the http_password_hash line for the config, which
lets the local page change the mode. The password itself is stored nowhere.
`

// cmdHashPassword prints the http_password_hash of the password read from
// stdin.
func cmdHashPassword(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	if isHelp(args) {
		fmt.Fprint(stdout, hashPasswordUsage)
		return exitOK
	}
	if len(args) > 0 {
		fmt.Fprint(stderr, hashPasswordUsage)
		return exitUsage
	}
	tty := isTerminal(stdin)
	if tty {
		fmt.Fprint(stderr, "Password for the local page: ")
	}
	var line string
	var err error
	withoutEcho(stdin, func() { line, err = bufio.NewReader(stdin).ReadString('\n') })
	if tty {
		fmt.Fprintln(stderr)
	}
	if err != nil && err != io.EOF {
		fmt.Fprintln(stderr, "hearth config hash-password:", err)
		return exitFailed
	}
	pw := strings.TrimRight(line, "\r\n")
	if len(pw) < 8 {
		fmt.Fprintln(stderr, "hearth config hash-password: the password needs at least 8 characters")
		return exitUsage
	}
	h, err := config.HashPassword(pw)
	if err != nil {
		fmt.Fprintln(stderr, "hearth config hash-password:", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "http_password_hash: %q\n", h)
	return exitOK
}
