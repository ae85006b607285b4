package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/uplink"
)

// Delivery batches beyond telemetry.
const (
	eventBatch     = 50  // events delivered per round
	aggregateBatch = 100 // aggregates per backfill message
)

// stateChanged marks the reported state as needing a publish.
func (a *Agent) stateChanged() {
	select {
	case a.stateDirty <- struct{}{}:
	default:
	}
}

// stateLoop publishes the controller's state, retained, after every change
// and after every reconnect. A publish that fails is retried every second
// until one succeeds; only the newest state is ever sent.
func (a *Agent) stateLoop(ctx context.Context) {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	dirty := false
	for {
		final := false
		select {
		case <-ctx.Done():
			return
		case <-a.stateDirty:
			dirty = true
		case <-retry.C:
		case <-a.stateFinal:
			final = true
			dirty = true
		}
		if dirty && a.up.Connected() {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := a.up.PublishState(pctx, a.ctl.State())
			cancel()
			if err == nil {
				dirty = false
			} else if !errors.Is(err, uplink.ErrNotConnected) {
				a.log.Debug("publish state", "err", err)
			}
		}
		if final {
			return
		}
	}
}

// deliverEvents publishes pending events, oldest first, each removed from
// the outbox only after its PUBACK.
func (a *Agent) deliverEvents(ctx context.Context) (int, error) {
	evs, err := a.store.PendingEvents(eventBatch)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	ids := make([]uint64, 0, len(evs))
	var perr error
	for _, e := range evs {
		ev := uplink.Event{ID: e.ID, Time: e.Time, Type: e.Type, Data: e.Data}
		// An event that cannot be encoded would block the queue for ever:
		// it is logged and dropped, never retried.
		if _, err := json.Marshal(ev); err != nil {
			a.log.Error("event cannot be encoded; dropped", "type", e.Type, "id", e.ID, "err", err)
			ids = append(ids, e.ID)
			continue
		}
		perr = a.up.PublishEvent(ctx, ev)
		if perr != nil {
			break
		}
		ids = append(ids, e.ID)
	}
	if len(ids) > 0 {
		if err := a.store.AckEvents(ids); err != nil {
			return 0, err
		}
	}
	return len(ids), perr
}

// deliverAggregates sends compacted minutes on backfill, oldest first.
func (a *Agent) deliverAggregates(ctx context.Context) (int, error) {
	aggs, err := a.store.PendingAggregates(aggregateBatch)
	if err != nil || len(aggs) == 0 {
		return 0, err
	}
	b, err := json.Marshal(struct {
		Aggregates []hearth.Aggregate `json:"aggregates"`
	}{aggs})
	if err != nil {
		return 0, err
	}
	if err := a.up.Publish(ctx, "telemetry/backfill", b, false); err != nil {
		return 0, err
	}
	froms := make([]uint64, len(aggs))
	for i, x := range aggs {
		froms[i] = x.SeqFrom
	}
	return len(aggs), a.store.AckAggregates(froms)
}
