package diag

import (
	"bytes"
	"sync"
)

// LogRing keeps the agent's last log lines in memory, for the support
// bundle (`hearth dump`, GET /v1/logs) on gateways where nothing else
// keeps them. It is an io.Writer for a log handler that writes one line a
// call (as slog's handlers do); it holds at most Lines lines of at most
// 4 KiB each. Safe for concurrent use.
type LogRing struct {
	mu    sync.Mutex
	lines []string
	next  int // where the next line goes once full
	max   int
}

// NewLogRing keeps the last n lines.
func NewLogRing(n int) *LogRing { return &LogRing{max: max(n, 1)} }

// Write stores p, split into lines. It never fails.
func (r *LogRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for line := range bytes.Lines(p) {
		line = bytes.TrimRight(line, "\n")
		if len(line) > 4096 {
			line = append(line[:4093:4093], "..."...)
		}
		if len(r.lines) < r.max {
			r.lines = append(r.lines, string(line))
			continue
		}
		r.lines[r.next] = string(line)
		r.next = (r.next + 1) % r.max
	}
	return len(p), nil
}

// Lines returns the lines kept, oldest first.
func (r *LogRing) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

// LogsReport answers GET /v1/logs.
type LogsReport struct {
	Lines []string `json:"lines"`
}
