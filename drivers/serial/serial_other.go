//go:build !linux

package serial

import "os"

func open(string, Config) (*os.File, error) { return nil, ErrUnsupported }

// Flush discards what the line has received and not yet been read.
func Flush(*os.File) error { return ErrUnsupported }
