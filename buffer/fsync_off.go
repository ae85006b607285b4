//go:build nofsync

package buffer

// syncs is off in this build: the power-cut harness builds the agent with
// the tag nofsync to show that without these fsyncs a power cut reuses
// seqs and rolls the lease version back. Never ship this build.
const syncs = false
