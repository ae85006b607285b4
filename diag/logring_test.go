package diag

import (
	"fmt"
	"slices"
	"testing"
)

func TestLogRingKeepsTheLastLines(t *testing.T) {
	r := NewLogRing(3)
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(r, "line %d\n", i)
	}
	if got, want := r.Lines(), []string{"line 3", "line 4", "line 5"}; !slices.Equal(got, want) {
		t.Errorf("Lines() = %q, want %q", got, want)
	}
	r.Write([]byte("a\nb\n"))
	if got, want := r.Lines(), []string{"line 5", "a", "b"}; !slices.Equal(got, want) {
		t.Errorf("after a two-line write: %q, want %q", got, want)
	}
}
