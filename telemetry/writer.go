package telemetry

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-energy/hearth"
)

// Tuning of the writer.
const (
	// CommitEvery bounds how long readings wait for the rest of their poll
	// cycle before they get seqs.
	CommitEvery = 500 * time.Millisecond
	// StoreAfter: a reading not confirmed live within it is stored; one
	// that is never touches the disk. While the uplink is down, readings
	// are stored at once, every poll cycle.
	StoreAfter = 5 * time.Second
	seqBlock   = 1024 // seqs reserved per write of the high-water mark
	freshMax   = 4096 // readings kept in memory while storing them fails
)

// SeqStore is what the writer needs of the buffer.
type SeqStore interface {
	// ReserveSeqs reserves n seqs, durably, and returns the block.
	ReserveSeqs(n int) (first, last uint64, err error)
	// ReleaseSeqs gives back the reserved seqs after used.
	ReleaseSeqs(used uint64) error
	// AppendWithSeq stores readings that carry their seqs; on a full disk
	// the error wraps hearth.ErrDiskFull and the store counts them.
	AppendWithSeq([]hearth.Reading) ([]hearth.Reading, error)
	// Refuse counts readings that got no seq for a full disk.
	Refuse([]hearth.Reading)
	// Restamp gives readings of boot taken before the clock synced their
	// true times, from at (the wall time at monotonic atMonoMS).
	Restamp(boot string, at time.Time, atMonoMS int64) (int64, error)
}

// WriterOptions configures a Writer.
type WriterOptions struct {
	Store SeqStore
	Fresh *Fresh // shared with the deliverer
	Clock Clock
	// CycleSize is how many readings make a poll cycle (the number of
	// devices): a full cycle gets its seqs at once.
	CycleSize int
	// Online says whether the uplink is connected; while it is not,
	// nothing will confirm readings, and they are stored together.
	Online func() bool
	// CommitInterval is how long readings wait in memory for one commit
	// while the uplink is down (buffer.commit_interval): they are stored
	// together once the oldest has waited this long. 0 stores every poll
	// cycle. A crash or power cut costs at most this much, reported as a
	// not_stored gap; each commit writes whole pages, so the longer the
	// interval, the fewer bytes a reading costs the medium.
	CommitInterval time.Duration
	// StoreAfter is how long a reading waits in memory for the broker's
	// PUBACK while the uplink is up before it is stored; 0: StoreAfter. It
	// must exceed the deliverer's telemetry window, or every batch would
	// be written to the medium before it is sent.
	StoreAfter time.Duration
	// Wake tells the deliverer there is something new.
	Wake   func()
	Record Recorder
	Logger *slog.Logger
}

func (w *Writer) storeAfter() time.Duration {
	if w.opt.StoreAfter > 0 {
		return w.opt.StoreAfter
	}
	return StoreAfter
}

// Writer gives readings their seqs, one poll cycle at a time (when every
// device has reported, or every CommitEvery), and hands them to the
// deliverer in memory at once. It stores in one transaction the readings
// that were not confirmed live within StoreAfter, and, while the uplink is
// down, all of them once the oldest has waited CommitInterval, as it does
// at Close. Seqs come from
// blocks reserved in the buffer, so a healthy uplink costs one small write
// per block of readings instead of two commits per cycle.
type Writer struct {
	opt  WriterOptions
	log  *slog.Logger
	in   chan hearth.Reading
	done chan struct{}
	// lastSeq is the last seq given to a reading, once seqKnown: from the
	// first reservation of this run (the seq before the block) on.
	lastSeq  atomic.Uint64
	seqKnown atomic.Bool
}

// LastSeq returns the last seq given to a reading: in this run, or before
// the first one, the last one before this run's first block. ok is false
// until the writer has reserved its first block; until then the buffer's
// own high-water mark is the answer. Unlike the buffer's, it never counts
// seqs reserved and not yet used.
func (w *Writer) LastSeq() (seq uint64, ok bool) {
	if !w.seqKnown.Load() {
		return 0, false
	}
	return w.lastSeq.Load(), true
}

// NewWriter returns a writer; it takes readings once started.
func NewWriter(opt WriterOptions) *Writer {
	return &Writer{opt: opt, log: discard(opt.Logger), in: make(chan hearth.Reading, 64), done: make(chan struct{})}
}

// Submit hands the writer a reading, waiting while it is busy, until ctx
// ends. It must not be called after Close.
func (w *Writer) Submit(ctx context.Context, r hearth.Reading) error {
	select {
	case w.in <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start runs the writer on a goroutine of its own.
func (w *Writer) Start() { go func() { defer close(w.done); w.run() }() }

// Close gives the readings submitted so far their seqs, stores every one
// the uplink has not confirmed, gives the unused seqs back, and returns
// when that is done. Every Submit must have returned.
func (w *Writer) Close() {
	close(w.in)
	<-w.done
}

func (w *Writer) run() {
	var (
		st         = w.opt.Store
		fresh      = w.opt.Fresh
		clock      = w.opt.Clock
		batch      []hearth.Reading
		next, last uint64 // reserved seqs not yet used: next..last
		used       uint64 // the last seq given to a reading
		diskFull   bool
		restampDue bool // readings were stored since the last restamp
		dropped    bool // readings with seqs were lost without a gap event
	)
	t := time.NewTicker(CommitEvery)
	defer t.Stop()
	noteDiskFull := func(err error) {
		// Control goes on; the buffer counts what it refused and
		// reports the range as a gap once there is room again.
		if !diskFull {
			w.log.Error("disk full: readings are not buffered until space returns", "err", err)
			w.opt.Record("disk_full", map[string]any{"error": err.Error()})
		}
		diskFull = true
	}
	// write stores rs and says whether the queue may forget them. Readings
	// refused for a full disk are counted by the buffer and reported as a
	// gap; on another failure they stay queued and are retried, up to
	// freshMax queued, beyond which they are dropped, and the seqs not
	// released at shutdown, so the next start reports them as not stored.
	write := func(rs []hearth.Reading) bool {
		_, err := st.AppendWithSeq(rs)
		switch {
		case errors.Is(err, hearth.ErrDiskFull):
			noteDiskFull(err)
			return true
		case err != nil:
			w.log.Error("buffer append", "err", err, "readings", len(rs))
			if len(rs) < freshMax {
				return false
			}
			dropped = true
			return true
		default:
			if diskFull {
				w.log.Info("disk space returned: buffering again")
			}
			diskFull = false
			restampDue = true
			return true
		}
	}
	// assign gives the batch seqs and queues it for delivery.
	assign := func() {
		for len(batch) > 0 {
			if next == 0 || next > last {
				first, l, err := st.ReserveSeqs(seqBlock)
				if err != nil {
					if errors.Is(err, hearth.ErrDiskFull) {
						noteDiskFull(err)
						st.Refuse(batch)
					} else {
						w.log.Error("reserve seqs: readings dropped", "err", err, "readings", len(batch))
					}
					batch = batch[:0]
					return
				}
				next, last = first, l
				if !w.seqKnown.Load() {
					w.lastSeq.Store(first - 1)
					w.seqKnown.Store(true)
				}
			}
			n := min(uint64(len(batch)), last-next+1)
			rs := slices.Clone(batch[:n])
			for i := range rs {
				rs[i].Seq = next
				rs[i].Time = rs[i].Time.UTC().Truncate(time.Millisecond)
				next++
			}
			used = rs[len(rs)-1].Seq
			w.lastSeq.Store(used)
			fresh.add(rs, clock.Mono())
			batch = batch[n:]
		}
		batch = batch[:0]
		w.opt.Wake()
	}
	// store writes what must not wait for the uplink any longer: what
	// it has not confirmed within StoreAfter or, while it is down, all of
	// it once the oldest has waited CommitInterval.
	store := func(all bool) {
		now := clock.Mono()
		due := all || w.opt.Online() || fresh.queuedBy(now-w.opt.CommitInterval)
		if due && fresh.store(now-w.storeAfter(), all || !w.opt.Online(), write) > 0 {
			w.opt.Wake()
		}
		// Readings taken before the clock synced get true times.
		if restampDue && clock.State() == hearth.ClockSynced {
			restampDue = false
			if n, err := st.Restamp(clock.Boot, clock.Now(), clock.Mono().Milliseconds()); err != nil {
				w.log.Error("restamp readings", "err", err)
			} else if n > 0 {
				w.log.Info("re-stamped readings taken before the clock synced", "readings", n)
			}
		}
	}
	for {
		select {
		case r, ok := <-w.in:
			if !ok {
				assign()
				store(true)
				// Everything up to used is delivered or stored: the rest
				// of the block is given back, so the next run goes on
				// from used+1 without a gap.
				if used > 0 && fresh.Len() == 0 && !dropped {
					if err := st.ReleaseSeqs(used); err != nil {
						w.log.Warn("release unused seqs; the next start reports them as a gap", "err", err)
					}
				}
				return
			}
			batch = append(batch, r)
			if len(batch) >= w.opt.CycleSize {
				assign()
				store(false)
			}
		case <-t.C:
			assign()
			store(false)
		}
	}
}

// Fresh holds the readings of the last few seconds in memory, in seq
// order, until they are confirmed live (then they never touch the disk) or
// stored because they were not confirmed in time. Confirming and storing
// exclude each other under mu, so a reading is acked in the store exactly
// when it was stored. The zero value is an empty queue.
type Fresh struct {
	mu sync.Mutex
	rs []freshReading
}

type freshReading struct {
	r  hearth.Reading
	at time.Duration // when it was queued, on the agent's monotonic clock
}

// add queues readings, which have seqs above those already queued.
func (q *Fresh) add(rs []hearth.Reading, at time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range rs {
		q.rs = append(q.rs, freshReading{r: r, at: at})
	}
}

// live returns up to limit of the newest queued readings queued at or after
// since, in seq order.
func (q *Fresh) live(since time.Duration, limit int) []hearth.Reading {
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
func (q *Fresh) confirm(seqs []uint64) (stored []uint64) {
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
func (q *Fresh) store(until time.Duration, all bool, write func([]hearth.Reading) (forget bool)) int {
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

// queuedBy says whether a reading queued at or before at is waiting.
func (q *Fresh) queuedBy(at time.Duration) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.rs) > 0 && q.rs[0].at <= at
}

// Len returns how many readings are queued.
func (q *Fresh) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.rs)
}
