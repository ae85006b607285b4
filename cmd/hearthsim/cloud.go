package main

import (
	"context"
	"fmt"
	"io"
)

// cmdCloud is `hearthsim cloud keygen|send|watch`.
func cmdCloud(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hearthsim cloud: not available in this build")
	return 1
}
