package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"sync"
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

// freshQueue holds the readings of the last few seconds in memory, in seq
// order, until they are confirmed live (then they never touch the disk) or
// stored because they were not confirmed in time. Confirming and storing
// exclude each other under mu, so a reading is acked in the store exactly
// when it was stored.
type freshQueue struct {
	mu sync.Mutex
	rs []freshReading
}

type freshReading struct {
	r  hearth.Reading
	at time.Duration // when it was queued, on the agent's monotonic clock
}

// add queues readings, which have seqs above those already queued.
func (q *freshQueue) add(rs []hearth.Reading, at time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range rs {
		q.rs = append(q.rs, freshReading{r: r, at: at})
	}
}

// live returns up to limit of the newest queued readings queued at or after
// since, in seq order.
func (q *freshQueue) live(since time.Duration, limit int) []hearth.Reading {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []hearth.Reading
	for i := max(len(q.rs)-limit, 0); i < len(q.rs); i++ {
		if q.rs[i].at >= since {
			out = append(out, q.rs[i].r)
		}
	}
	return out
}

// confirm removes the queued readings among seqs, which the broker has
// acknowledged, and returns the other seqs: readings stored meanwhile (or
// sent from the store), which the caller acks in the store.
func (q *freshQueue) confirm(seqs []uint64) (stored []uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, seq := range seqs {
		i, ok := slices.BinarySearchFunc(q.rs, seq, func(f freshReading, seq uint64) int { return cmp.Compare(f.r.Seq, seq) })
		if ok {
			q.rs = slices.Delete(q.rs, i, i+1)
		} else {
			stored = append(stored, seq)
		}
	}
	return stored
}

// store hands the readings queued at or before until (all of them when all
// is set), oldest first, to write, and forgets them when write says so: on
// success, or when the buffer counted them as refused. It returns how many
// readings it handed over.
func (q *freshQueue) store(until time.Duration, all bool, write func([]hearth.Reading) (forget bool)) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.rs)
	if !all {
		n = sort.Search(len(q.rs), func(i int) bool { return q.rs[i].at > until })
	}
	if n == 0 {
		return 0
	}
	rs := make([]hearth.Reading, n)
	for i := range rs {
		rs[i] = q.rs[i].r
	}
	if write(rs) {
		q.rs = slices.Delete(q.rs, 0, n)
	}
	return n
}

// len returns how many readings are queued.
func (q *freshQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.rs)
}
