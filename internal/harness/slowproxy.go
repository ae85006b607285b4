package harness

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Link describes a bad network path for a SlowProxy. TCP never hands an
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

// SlowProxy is a TCP proxy that makes the path slow and lossy (see Link).
// Its Link can be changed while connections are open; the change applies
// to the next chunk read.
type SlowProxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	link   Link
	rng    *rand.Rand
	conns  map[net.Conn]struct{}
	closed bool
	lost   int
	wg     sync.WaitGroup
}

// StartSlowProxy listens on a free 127.0.0.1 port and forwards every
// accepted connection to target over a path shaped by link. It is closed
// when the test ends.
func StartSlowProxy(t testing.TB, target string, link Link) *SlowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("slow proxy listen: %v", err)
	}
	p := &SlowProxy{target: target, ln: ln, link: link, conns: map[net.Conn]struct{}{},
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL returns tcp://ADDR for MQTT clients.
func (p *SlowProxy) URL() string {
	return "tcp://127.0.0.1:" + strconv.Itoa(p.ln.Addr().(*net.TCPAddr).Port)
}

// SetLink changes the path's behaviour.
func (p *SlowProxy) SetLink(l Link) {
	p.mu.Lock()
	p.link = l
	p.mu.Unlock()
}

// Lost returns how many chunks were held back as lost so far.
func (p *SlowProxy) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

// Cut closes every connection going through the proxy.
func (p *SlowProxy) Cut() {
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
}

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines.
func (p *SlowProxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *SlowProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
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

// delay returns how long the next chunk of n bytes is held back.
func (p *SlowProxy) delay(n int) time.Duration {
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

func (p *SlowProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(p.delay(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
