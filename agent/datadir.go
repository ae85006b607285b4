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
// in (any key it sets), filled from the buffer's meta table the first time.
func openLeaseState(dir string, store *buffer.Store, log *slog.Logger) (*buffer.State, error) {
	st, err := buffer.OpenState(filepath.Join(dir, stateFile), store, log.With("component", "state"))
	if err != nil {
		return nil, fmt.Errorf("open lease state: %w", err)
	}
	return st, nil
}
