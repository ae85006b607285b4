package agent

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/hearth-energy/hearth/buffer"
)

// stateFile is the lease state (buffer.State) in data_dir, kept apart
// from the buffer so that a corrupt buffer does not take it along.
const stateFile = "state.json"

// openLeaseState opens the file the control loop keeps the lease state
// in (any key it sets), and the buffer its high-water marks; UseMirror
// attaches the buffer, which fills it the first time.
func openLeaseState(dir string, log *slog.Logger) (*buffer.State, error) {
	st, err := buffer.OpenStateAlone(filepath.Join(dir, stateFile), log.With("component", "state"))
	if err != nil {
		return nil, fmt.Errorf("open lease state: %w", err)
	}
	return st, nil
}
