package config

import (
	"strings"
	"testing"
)

// TestPasswordHash makes a hash, checks it verifies its own password and
// no other, and that malformed hashes are refused with the expected form.
func TestPasswordHash(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePasswordHash(h)
	if err != nil {
		t.Fatalf("parse %q: %v", h, err)
	}
	if !p.Verify("correct horse") {
		t.Error("the password does not verify against its own hash")
	}
	for _, wrong := range []string{"", "correct hors", "correct horse "} {
		if p.Verify(wrong) {
			t.Errorf("%q verifies", wrong)
		}
	}
	if h2, _ := HashPassword("correct horse"); h2 == h {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("an empty password is hashed")
	}
	for _, bad := range []string{"secret", "bcrypt$10$x$y", "pbkdf2-sha256$1000$c2FsdHNhbHQ$" + strings.Repeat("A", 43), "pbkdf2-sha256$210000$!!$x"} {
		if _, err := ParsePasswordHash(bad); err == nil || !strings.Contains(err.Error(), "hash-password") {
			t.Errorf("%q: got %v, want an error naming hearth config hash-password", bad, err)
		}
	}
}
