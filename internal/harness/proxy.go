package harness

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Link describes a bad network path for a Proxy. TCP never hands an
// application damaged or missing bytes, so loss shows up as it does on a
// real lossy link: the segment is held back for a retransmission timeout,
// which doubles while losses follow one another.
type Link struct {
	Latency time.Duration // added to every chunk, one way
	Jitter  time.Duration // up to this much more, uniformly
	Loss    float64       // probability that a chunk is "lost" and retransmitted (0..1)
	RTO     time.Duration // first retransmission timeout; 0 means 200ms
	// BytesPerSec caps the throughput of each direction of each
	// connection; 0 is unlimited.
	BytesPerSec int
}

// Proxy is a TCP proxy between a client and a server that a test can use to
// cut connections abruptly, the way a failing mobile link does, without
// stopping either end, or to make the path slow and lossy (SetLink).
type Proxy struct {
	target string
	ln     net.Listener

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	closed    bool
	blackhole bool
	refuse    bool
	link      Link
	rng       *rand.Rand
	lost      int
	bytes     atomic.Int64 // forwarded, both directions
	wg        sync.WaitGroup
}

// Bytes returns the bytes forwarded so far, both directions together: what
// crossed the wire above TCP (TLS records included).
func (p *Proxy) Bytes() int64 { return p.bytes.Load() }

// StartProxy listens on a free 127.0.0.1 port and forwards every accepted
// connection to target (host:port). It is closed when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[net.Conn]struct{}),
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the proxy's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// URL returns tcp://ADDR for MQTT clients.
func (p *Proxy) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(p.Port()) }

// Cut closes every connection currently going through the proxy, on both
// sides. New connections are still accepted. It returns how many
// client connections were cut.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	clear(p.conns)
	p.mu.Unlock()
	return n / 2
}

// Blackhole makes the proxy silently discard everything it reads, in both
// directions, while on is true: connections stay open but nothing gets
// through, as on a link that died without a reset.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// Refuse makes the proxy close new connections at once while on is true,
// as if the server were unreachable; established ones are not touched.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// SetLink makes the path behave as l from the next chunk read on, for the
// connections open and those to come; the zero Link is a clean path.
func (p *Proxy) SetLink(l Link) {
	p.mu.Lock()
	p.link = l
	p.mu.Unlock()
}

// Lost returns how many chunks were held back as lost so far.
func (p *Proxy) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns[in] = struct{}{}
		p.conns[out] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := p.blackhole
			p.mu.Unlock()
			if !drop {
				if d := p.delay(n); d > 0 {
					time.Sleep(d)
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
				p.bytes.Add(int64(n))
			}
		}
		if err != nil {
			break
		}
	}
	// One direction ended: end both, so neither side half-hangs.
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// delay returns how long the next chunk of n bytes is held back.
func (p *Proxy) delay(n int) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.link
	d := l.Latency
	if l.Jitter > 0 {
		d += time.Duration(p.rng.Int64N(int64(l.Jitter)))
	}
	rto := l.RTO
	if rto <= 0 {
		rto = 200 * time.Millisecond
	}
	for l.Loss > 0 && p.rng.Float64() < l.Loss && rto < time.Minute {
		p.lost++
		d += rto
		rto *= 2
	}
	if l.BytesPerSec > 0 {
		d += time.Duration(n) * time.Second / time.Duration(l.BytesPerSec)
	}
	return d
}
