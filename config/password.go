package config

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The local page's password is kept as a PBKDF2-SHA256 hash:
// "pbkdf2-sha256$ITERATIONS$SALT$KEY", salt and key in unpadded base64.
// The iteration count makes each guess cost tens of milliseconds on a
// gateway, on top of the page's rate limit.
const (
	passwordScheme     = "pbkdf2-sha256"
	passwordIterations = 210_000
	minIterations      = 100_000
	passwordSaltBytes  = 16
	passwordKeyBytes   = 32
)

// PasswordHash is a parsed http_password_hash.
type PasswordHash struct {
	iterations int
	salt, key  []byte
}

var b64 = base64.RawStdEncoding

// HashPassword makes the http_password_hash of password, with a fresh
// random salt. An empty password is refused.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	salt := make([]byte, passwordSaltBytes)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha256.New, password, salt, passwordIterations, passwordKeyBytes)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s$%d$%s$%s", passwordScheme, passwordIterations, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// ParsePasswordHash reads a hash made by HashPassword; the error says what
// form was expected.
func ParsePasswordHash(s string) (*PasswordHash, error) {
	const want = "want the output of `hearth config hash-password` (pbkdf2-sha256$ITERATIONS$SALT$KEY)"
	parts := strings.Split(s, "$")
	if len(parts) != 4 || parts[0] != passwordScheme {
		return nil, errors.New(want)
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < minIterations || n > 100*passwordIterations {
		return nil, fmt.Errorf("%d iterations: want %d to %d; %s", n, minIterations, 100*passwordIterations, want)
	}
	salt, err1 := b64.DecodeString(parts[2])
	key, err2 := b64.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) != passwordKeyBytes {
		return nil, errors.New("salt or key is not valid: " + want)
	}
	return &PasswordHash{iterations: n, salt: salt, key: key}, nil
}

// Verify reports whether password is the one hashed, in time that does
// not depend on how much of it matches.
func (h *PasswordHash) Verify(password string) bool {
	if h == nil || password == "" {
		return false
	}
	key, err := pbkdf2.Key(sha256.New, password, h.salt, h.iterations, passwordKeyBytes)
	return err == nil && subtle.ConstantTimeCompare(key, h.key) == 1
}
