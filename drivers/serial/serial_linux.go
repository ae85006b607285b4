package serial

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

var baudRates = map[int]uint32{
	1200: syscall.B1200, 2400: syscall.B2400, 4800: syscall.B4800, 9600: syscall.B9600,
	19200: syscall.B19200, 38400: syscall.B38400, 57600: syscall.B57600, 115200: syscall.B115200,
	230400: syscall.B230400,
}

// Linux termios constants the syscall package does not name.
const (
	cbaud   = 0o010017
	crtscts = 0o20000000000
	tcflsh  = 0x540B
)

func ioctl(fd int, req uintptr, t *syscall.Termios) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(t))); errno != 0 {
		return errno
	}
	return nil
}

func open(path string, cfg Config) (*os.File, error) {
	speed, ok := baudRates[cfg.Baud]
	if !ok {
		return nil, fmt.Errorf("unsupported baud rate %d", cfg.Baud)
	}
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var t syscall.Termios
	if err := ioctl(fd, syscall.TCGETS, &t); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("not a terminal: %w", err)
	}
	// Raw: no line editing, echo, signals or character translation.
	t.Iflag &^= syscall.IGNBRK | syscall.BRKINT | syscall.PARMRK | syscall.ISTRIP | syscall.INLCR |
		syscall.IGNCR | syscall.ICRNL | syscall.IXON | syscall.IXOFF | syscall.IXANY | syscall.INPCK
	t.Oflag &^= syscall.OPOST
	t.Lflag &^= syscall.ECHO | syscall.ECHONL | syscall.ICANON | syscall.ISIG | syscall.IEXTEN
	t.Cflag &^= syscall.CSIZE | syscall.PARENB | syscall.PARODD | syscall.CSTOPB | cbaud | crtscts
	t.Cflag |= syscall.CS8 | syscall.CREAD | syscall.CLOCAL | speed
	switch cfg.Parity {
	case "E":
		t.Cflag |= syscall.PARENB
		t.Iflag |= syscall.INPCK
	case "O":
		t.Cflag |= syscall.PARENB | syscall.PARODD
		t.Iflag |= syscall.INPCK
	}
	if cfg.StopBits == 2 {
		t.Cflag |= syscall.CSTOPB
	}
	t.Ispeed, t.Ospeed = speed, speed
	// VMIN 1 makes an empty non-blocking read fail with EAGAIN (with 0 it
	// returns 0, which reads as end of file), so the runtime poller and
	// deadlines do the waiting.
	t.Cc[syscall.VMIN], t.Cc[syscall.VTIME] = 1, 0
	if err := ioctl(fd, syscall.TCSETS, &t); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("set line settings: %w", err)
	}
	// A non-blocking descriptor joins the runtime poller, which is what
	// makes deadlines work.
	return os.NewFile(uintptr(fd), path), nil
}

// Flush discards what the line has received and not yet been read.
func Flush(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		const tciflush = 0
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, tcflsh, tciflush); errno != 0 {
			ierr = errno
		}
	})
	if err != nil {
		return err
	}
	return ierr
}
