package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestCompletionBashCompletesTheCommandsOfTheUsage: `hearth completion
// bash` is valid bash, completes commands and their subcommands when
// sourced, and offers exactly the commands `hearth help` lists, each of
// which the binary knows and `hearth help --man` documents.
func TestCompletionBashCompletesTheCommandsOfTheUsage(t *testing.T) {
	t.Parallel()
	script, errOut, code := runBinary(t, nil, hearthBin, "completion", "bash")
	if code != 0 {
		t.Fatalf("hearth completion bash: exit %d\n%s", code, errOut)
	}
	path := filepath.Join(t.TempDir(), "hearth.bash")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n on the completion script: %v\n%s", err, out)
	}
	complete := func(cword int, words ...string) []string {
		t.Helper()
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := "source " + path + "; COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" + string(rune('0'+cword)) +
			`; _hearth; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete(1, "hearth", "st"); !slices.Equal(got, []string{"status"}) {
		t.Errorf("hearth st<TAB> completes to %q, want [status]", got)
	}
	if got := complete(2, "hearth", "config", ""); !slices.Equal(got, []string{"check", "init", "hash-password"}) {
		t.Errorf("hearth config <TAB> completes to %q", got)
	}
	if got := complete(2, "hearth", "mode", "s"); !slices.Equal(got, []string{"set"}) {
		t.Errorf("hearth mode s<TAB> completes to %q", got)
	}
	top := complete(1, "hearth", "")

	help, _, _ := runBinary(t, nil, hearthBin, "help")
	var listed []string
	for _, m := range regexp.MustCompile(`(?m)^  hearth ([a-z-]+)`).FindAllStringSubmatch(help, -1) {
		if !slices.Contains(listed, m[1]) {
			listed = append(listed, m[1])
		}
	}
	for _, c := range listed {
		if !slices.Contains(top, c) {
			t.Errorf("hearth help lists %q, which completion does not offer", c)
		}
	}
	for _, c := range top {
		if c != "help" && !slices.Contains(listed, c) {
			t.Errorf("completion offers %q, which hearth help does not list", c)
		}
		_, errOut, _ := runBinary(t, nil, hearthBin, c, "--help")
		if strings.Contains(errOut, "unknown command") {
			t.Errorf("completion offers %q, which hearth does not know:\n%s", c, errOut)
		}
	}

	// hearth(1) documents every command completion offers, and renders.
	man, errOut, code := runBinary(t, nil, hearthBin, "help", "--man")
	if code != 0 || !strings.HasPrefix(man, ".TH HEARTH 1 ") {
		t.Fatalf("hearth help --man: exit %d\n%s%s", code, man, errOut)
	}
	for _, c := range top {
		if c != "help" && !strings.Contains(man, "\n.B hearth "+strings.ReplaceAll(c, "-", `\-`)) {
			t.Errorf("the manual page has no entry for %q", c)
		}
	}
	// scripts/deps.sh installs groff and zsh, so that these checks run
	// wherever make test does.
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Fatalf("groff: %v (scripts/deps.sh installs groff-base)", err)
	}
	{
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(man)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff on the manual page: %v\n%s", err, out)
		}
	}

	zsh, _, code := runBinary(t, nil, hearthBin, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(zsh, "#compdef hearth\n") || !strings.Contains(zsh, `config) words_="check init hash-password"`) {
		t.Errorf("hearth completion zsh: exit %d\n%s", code, zsh)
	}
	zshPath, err := exec.LookPath("zsh")
	if err != nil {
		t.Fatalf("zsh: %v (scripts/deps.sh installs zsh)", err)
	}
	{
		zpath := filepath.Join(t.TempDir(), "_hearth")
		os.WriteFile(zpath, []byte(zsh), 0o644)
		if out, err := exec.Command(zshPath, "-n", zpath).CombinedOutput(); err != nil {
			t.Errorf("zsh -n on the completion script: %v\n%s", err, out)
		}
	}
}
