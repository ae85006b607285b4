//go:build !nofsync

package buffer

// syncs says whether the store makes durable what must survive a power
// cut: the seq reservation (a commit with synchronous=FULL) and every write
// of the State file (fsync of the file and of its directory). Only the
// power-cut harness turns it off, with the build tag nofsync, to show that
// it catches their absence; a gateway is never built so.
const syncs = true
