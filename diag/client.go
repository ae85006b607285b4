package diag

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// RequestTimeout bounds one request of the Client.
const RequestTimeout = 5 * time.Second

// Errors a Client's request wraps when it cannot reach the agent.
var (
	ErrNoAgent  = errors.New("no agent answers on the socket")
	ErrNoAccess = errors.New("no permission to use the socket")
)

// ClientError is a failure to reach the agent, with what the tech can do
// about it. It wraps ErrNoAgent or ErrNoAccess.
type ClientError struct {
	Err error
	Msg string
}

func (e *ClientError) Error() string { return e.Msg }
func (e *ClientError) Unwrap() error { return e.Err }

// Client talks to the diagnostics API over the agent's Unix socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path. It connects per
// request.
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{
		Timeout: RequestTimeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// WithTimeout returns a client whose requests may take up to d: for
// requests that hold a link for long, such as a scan of many units.
func (c *Client) WithTimeout(d time.Duration) *Client {
	hc := *c.hc
	hc.Timeout = d
	return &Client{path: c.path, hc: &hc}
}

// Do sends one request to path (below APIVersion) with query and a JSON
// body (nil: none), and decodes the answer into out; a *json.RawMessage
// out gets the answer as sent. An answer that is not 2xx returns the
// agent's error message.
func (c *Client) Do(method, path string, query url.Values, body, out any) error {
	u := "http://hearth" + APIVersion + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.explain(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e APIError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("agent answered %s", resp.Status)
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// explain turns a failure to reach the socket into what the tech can do.
func (c *Client) explain(err error) error {
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return &ClientError{Err: ErrNoAccess, Msg: fmt.Sprintf(
			"permission denied on %s: run with sudo, or join the socket's group (diag_group in the config)", c.path)}
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return &ClientError{Err: ErrNoAgent, Msg: fmt.Sprintf(
			"hearth is not running (no agent on %s): start it with `systemctl start hearth`, or use `hearth modbus … --direct` to reach devices without it", c.path)}
	}
	return &ClientError{Err: ErrNoAgent, Msg: fmt.Sprintf("cannot reach the agent on %s: %v", c.path, err)}
}
