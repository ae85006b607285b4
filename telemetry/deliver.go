package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-energy/hearth"
)

// Delivery batches.
const (
	liveBatch      = 100             // readings a live telemetry message carries at most
	backfillBatch  = 200             // readings a backfill message carries at most
	liveMaxAge     = 2 * time.Second // older undelivered readings go on backfill
	eventBatch     = 50              // events delivered per round
	aggregateBatch = 100             // aggregates per backfill message
)

// Outbox is what the deliverer needs of the buffer.
type Outbox interface {
	// Newest returns up to limit of the newest stored readings, in seq order.
	Newest(limit int) ([]hearth.Reading, error)
	// Pending returns up to limit of the oldest stored readings.
	Pending(limit int) ([]hearth.Reading, error)
	// Ack removes delivered readings.
	Ack(seqs []uint64) error
	PendingEvents(limit int) ([]hearth.Event, error)
	AckEvents(ids []uint64) error
	PendingAggregates(limit int) ([]hearth.Aggregate, error)
	AckAggregates(seqFroms []uint64) error
}

// Uplink is what the deliverer needs of the MQTT session. Each publish
// returns only once the broker has acknowledged it (or failed).
type Uplink interface {
	Connected() bool
	// PublishTelemetry returns how many of the leading readings the broker
	// acknowledged.
	PublishTelemetry(ctx context.Context, rs []hearth.Reading, backfill bool) (int, error)
	// PublishEvent fails with an error wrapping hearth.ErrInvalidEvent for
	// an event that can never be sent.
	PublishEvent(ctx context.Context, ev hearth.Event) error
	PublishAggregates(ctx context.Context, aggs []hearth.Aggregate) error
}

// DelivererOptions configures a Deliverer.
type DelivererOptions struct {
	Outbox Outbox
	Uplink Uplink
	// Fresh is the writer's queue of readings in memory; nil when every
	// reading is stored before delivery.
	Fresh  *Fresh
	Clock  Clock // Boot and Start tell live readings from the backlog
	Logger *slog.Logger
	// Window gathers live readings into one message: they are sent once
	// the oldest has waited this long (or a message is full). 0 sends each
	// round's at once. The control loop never waits on it, and a reading
	// still leaves the outbox only after its PUBACK.
	Window time.Duration
}

// Deliverer sends what the gateway has for the cloud whenever the uplink is
// connected: events first, then fresh readings on …/telemetry (from memory
// and from the buffer), then the backlog oldest first on
// …/telemetry/backfill, a batch at a time so live data keeps flowing. A
// reading or event leaves the buffer only after its PUBACK.
type Deliverer struct {
	opt   DelivererOptions
	log   *slog.Logger
	fresh *Fresh
	wake  chan struct{}

	// upSince is when the deliverer last saw the uplink come back after
	// it was lost, on the monotonic clock (a time.Duration); 0 before.
	upSince atomic.Int64
	// reported is set once LinkChanged has been called: from then on the
	// uplink's own reports, not polling Connected, tell a reconnection.
	// linked is set by the first connection reported.
	reported, linked atomic.Bool

	cancel   context.CancelFunc
	draining chan struct{} // closed by Close: deliver once more, then return
	wg       sync.WaitGroup
}

// NewDeliverer returns a deliverer; it sends nothing until Start.
func NewDeliverer(opt DelivererOptions) *Deliverer {
	fresh := opt.Fresh
	if fresh == nil {
		fresh = &Fresh{}
	}
	return &Deliverer{opt: opt, log: discard(opt.Logger), fresh: fresh, wake: make(chan struct{}, 1), draining: make(chan struct{})}
}

// Wake tells the deliverer there is something new to send. It never blocks.
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// LinkChanged tells the deliverer of a connection the uplink made (up)
// or lost, in the order they happened; it never blocks, so it may be
// called from the uplink's connect loop. A connection after the first is
// a reconnection: what was taken before it is the outage and goes on
// backfill, and delivery resumes at once. Once it has been called, the
// deliverer relies on these reports alone, so a link that drops and comes
// back between two of its polls of Connected is still seen. Without them
// (an Uplink that does not report), it notices a reconnection by polling
// Connected about once a second, and misses one that falls between polls.
func (d *Deliverer) LinkChanged(up bool) {
	d.reported.Store(true)
	if !up {
		return
	}
	if d.linked.Swap(true) { // back after an outage; the first connect at boot is none
		d.upSince.Store(int64(d.opt.Clock.Mono()))
	}
	d.Wake()
}

// Start delivers on a goroutine of its own until Close: on every Wake and
// at least every second.
func (d *Deliverer) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Go(func() { d.run(ctx) })
}

// Close makes one last delivery round of what is pending, abandons it at
// deadline, and returns when the deliverer has stopped.
func (d *Deliverer) Close(deadline time.Time) {
	close(d.draining)
	stop := time.AfterFunc(time.Until(deadline), func() {
		if d.cancel != nil {
			d.cancel()
		}
	})
	d.wg.Wait()
	stop.Stop()
	if d.cancel != nil {
		d.cancel()
	}
}

func (d *Deliverer) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	up, wasUp := false, false
	for last := false; !last; {
		select {
		case <-ctx.Done():
			return
		case <-d.draining:
			last = true
		case <-d.wake:
		case <-t.C:
		}
		// An uplink that reports its connections (LinkChanged) is not
		// polled for them: a poll misses a link lost and made again
		// between two polls.
		if now := d.opt.Uplink.Connected(); now != up && !d.reported.Load() {
			up = now
			if up && wasUp { // back after an outage; the first connect at boot is none
				d.upSince.Store(int64(d.opt.Clock.Mono()))
			}
			wasUp = wasUp || up
		}
		for ctx.Err() == nil && d.opt.Uplink.Connected() {
			sent, err := d.DeliverOnce(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					d.log.Debug("deliver", "err", err)
				}
				break
			}
			if sent == 0 {
				break
			}
		}
	}
}

// DeliverOnce makes one delivery round: pending events, one live batch,
// one batch of compacted minutes and one backfill batch. It returns how
// many messages' worth of items the broker confirmed (0: nothing left).
func (d *Deliverer) DeliverOnce(ctx context.Context) (int, error) {
	out := d.opt.Outbox
	// Events are few and matter most (trips, gaps, lease outcomes).
	sent, err := d.deliverEvents(ctx)
	if err != nil {
		return sent, err
	}
	newest, err := out.Newest(liveBatch)
	if err != nil {
		return 0, err
	}
	// Age is judged on the monotonic clock, which a wall-clock step cannot move.
	now := d.opt.Clock.Mono().Milliseconds()
	var live []hearth.Reading
	for _, r := range newest {
		if r.Boot == d.opt.Clock.Boot && now-r.MonoMS <= liveMaxAge.Milliseconds() {
			live = append(live, r)
		}
	}
	// Readings still in memory are newer than every stored one; they may
	// have waited out the window and still be live. (Stored ones were
	// taken while the uplink was down, or not confirmed in time: backlog.)
	// Those taken while the uplink was down are the outage, though: they go
	// on backfill, from memory, as they would had they been stored.
	nowD := time.Duration(now) * time.Millisecond
	cut := min(time.Duration(d.upSince.Load()), nowD-liveMaxAge).Milliseconds()
	var early []hearth.Reading
	for _, r := range d.fresh.live(nowD-liveMaxAge-d.opt.Window, liveBatch-len(live)) {
		if r.MonoMS < cut {
			early = append(early, r)
		} else {
			live = append(live, r)
		}
	}
	if len(early) > 0 {
		if err := d.publish(ctx, early, true); err != nil {
			return sent, err
		}
		sent += len(early)
	}
	// The window: hold the live readings until the oldest has waited it
	// out, unless a message is full or the deliverer is closing.
	held := len(live) > 0 && len(live) < liveBatch && now-live[0].MonoMS < d.opt.Window.Milliseconds() && !d.closing()
	if len(live) > 0 && !held {
		if err := d.publish(ctx, live, false); err != nil {
			return sent, err
		}
		sent += len(live)
	}
	// Compacted minutes are the oldest backlog there is.
	n, err := d.deliverAggregates(ctx)
	sent += n
	if err != nil || len(newest) == 0 {
		return sent, err
	}
	// The backlog is stored, and older than every reading in memory. It
	// is what is older than the newest batch looked at, so a reading
	// committed meanwhile waits for the next live batch.
	hi := newest[len(newest)-1].Seq
	pending, err := out.Pending(backfillBatch)
	if err != nil {
		return sent, err
	}
	var backlog []hearth.Reading
	for _, r := range pending {
		if r.Seq <= hi && (len(live) == 0 || r.Seq < live[0].Seq) {
			backlog = append(backlog, r)
		}
	}
	if len(backlog) > 0 {
		if err := d.publish(ctx, backlog, true); err != nil {
			return sent, err
		}
		sent += len(backlog)
	}
	return sent, nil
}

// closing says whether Close was called: what is held is sent now.
func (d *Deliverer) closing() bool {
	select {
	case <-d.draining:
		return true
	default:
		return false
	}
}

// publish sends rs and forgets what the broker confirmed: from memory if
// it was never stored, else from the buffer.
func (d *Deliverer) publish(ctx context.Context, rs []hearth.Reading, backfill bool) error {
	n, err := d.opt.Uplink.PublishTelemetry(ctx, rs, backfill)
	// What the broker confirmed leaves the buffer even when a later part of
	// a split batch failed, so it is not sent twice.
	if n > 0 {
		seqs := make([]uint64, n)
		for i, r := range rs[:n] {
			seqs[i] = r.Seq
		}
		if stored := d.fresh.confirm(seqs); len(stored) > 0 {
			if aerr := d.opt.Outbox.Ack(stored); aerr != nil {
				return aerr
			}
		}
	}
	return err
}

// deliverEvents publishes pending events, oldest first, each removed from
// the outbox only after its PUBACK.
func (d *Deliverer) deliverEvents(ctx context.Context) (int, error) {
	evs, err := d.opt.Outbox.PendingEvents(eventBatch)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	ids := make([]uint64, 0, len(evs))
	var perr error
	for _, e := range evs {
		perr = d.opt.Uplink.PublishEvent(ctx, e)
		if errors.Is(perr, hearth.ErrInvalidEvent) {
			// An event that cannot be encoded would block the queue for
			// ever: it is logged and dropped, never retried.
			d.log.Error("event cannot be encoded; dropped", "type", e.Type, "id", e.ID, "err", perr)
			perr = nil
		}
		if perr != nil {
			break
		}
		ids = append(ids, e.ID)
	}
	if len(ids) > 0 {
		if err := d.opt.Outbox.AckEvents(ids); err != nil {
			return 0, err
		}
	}
	return len(ids), perr
}

// deliverAggregates sends compacted minutes on backfill, oldest first.
func (d *Deliverer) deliverAggregates(ctx context.Context) (int, error) {
	aggs, err := d.opt.Outbox.PendingAggregates(aggregateBatch)
	if err != nil || len(aggs) == 0 {
		return 0, err
	}
	if err := d.opt.Uplink.PublishAggregates(ctx, aggs); err != nil {
		return 0, err
	}
	froms := make([]uint64, len(aggs))
	for i, x := range aggs {
		froms[i] = x.SeqFrom
	}
	return len(aggs), d.opt.Outbox.AckAggregates(froms)
}
