package buffer

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
)

// processWriteBytes returns write_bytes from /proc/self/io: the bytes this
// process caused to be sent to the storage layer (page cache writeback it
// dirtied included), which is what wears flash. It returns 0 where the file
// is missing (not Linux, or a kernel without task I/O accounting).
func processWriteBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	return parseWriteBytes(b)
}

func parseWriteBytes(b []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, value, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok || string(name) != "write_bytes" {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
		if err != nil {
			return 0
		}
		return n
	}
	return 0
}
