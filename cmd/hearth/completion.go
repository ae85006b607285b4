package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// subcommands are the words that may follow a command, for shell
// completion; the commands themselves are those of the usage text.
var subcommands = []struct {
	name string
	subs []string
}{
	{"lease", []string{"reset-version"}},
	{"keys", []string{"reload"}},
	{"clock", []string{"reset-floor"}},
	{"mode", []string{"get", "set", "clear"}},
	{"log-level", []string{"debug", "info", "warn", "error"}},
	{"uplink", []string{"reconnect"}},
	{"device", []string{"probe"}},
	{"modbus", []string{"read", "scan"}},
	{"config", []string{"check", "init", "hash-password"}},
	{"cert", []string{"request"}},
	{"completion", []string{"bash", "zsh"}},
}

// commandNames lists the commands of the usage text, in its order, and
// help.
func commandNames() []string {
	var names []string
	for _, l := range strings.Split(usage, "\n") {
		if rest, ok := strings.CutPrefix(l, "  hearth "); ok {
			if name, _, _ := strings.Cut(rest, " "); !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return append(names, "help")
}

// cmdCompletion prints a completion script for bash or zsh, made from
// the usage text and the subcommands.
func cmdCompletion(args []string, stdout, stderr io.Writer) int {
	const use = "usage: hearth completion bash|zsh  (e.g. hearth completion bash > /etc/bash_completion.d/hearth)"
	if len(args) == 1 && isHelp(args) {
		fmt.Fprintln(stdout, use)
		return exitOK
	}
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		fmt.Fprintln(stderr, use)
		return exitUsage
	}
	var cases strings.Builder
	for _, c := range subcommands {
		fmt.Fprintf(&cases, "        %s) words=%q ;;\n", c.name, strings.Join(c.subs, " "))
	}
	top := strings.Join(commandNames(), " ")
	switch args[0] {
	case "bash":
		fmt.Fprintf(stdout, `# bash completion for hearth, made by 'hearth completion bash'
_hearth() {
    local cur words=""
    cur="${COMP_WORDS[COMP_CWORD]}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        words=%q
    elif [ "$COMP_CWORD" -eq 2 ]; then
        case "${COMP_WORDS[1]}" in
%s        esac
    fi
    case "$cur" in
        -*) words="--config --socket --json --help" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _hearth hearth
`, top, cases.String())
	case "zsh":
		fmt.Fprintf(stdout, `#compdef hearth
# zsh completion for hearth, made by 'hearth completion zsh'
_hearth() {
    local words_=""
    if (( CURRENT == 2 )); then
        words_=%q
    elif (( CURRENT == 3 )); then
        case "${words[2]}" in
%s        esac
    fi
    [[ "${words[CURRENT]}" == -* ]] && words_="--config --socket --json --help"
    if [[ -n "$words_" ]]; then
        compadd -- ${=words_}
    else
        _files
    fi
}
compdef _hearth hearth
`, top, strings.ReplaceAll(cases.String(), "words=", "words_="))
	}
	return exitOK
}

// manPage writes hearth(1) in roff, made from the usage text: one entry
// per command line of it, so the page lists what `hearth help` lists.
func manPage(w io.Writer, version string) {
	esc := func(s string) string {
		s = strings.ReplaceAll(s, `\`, `\e`)
		s = strings.ReplaceAll(s, "-", `\-`)
		if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
			s = `\&` + s
		}
		return s
	}
	fmt.Fprintf(w, ".TH HEARTH 1 \"\" \"hearth %s\" \"hearth manual\"\n", esc(version))
	fmt.Fprintln(w, ".SH NAME\nhearth \\- home\\-battery gateway agent and its field commands")
	fmt.Fprintln(w, ".SH SYNOPSIS\n.B hearth\n.I command\n[flags]")
	fmt.Fprintln(w, ".SH COMMANDS")
	lines := strings.Split(usage, "\n")
	var rest []string
	for i, l := range lines {
		if !strings.HasPrefix(l, "  hearth ") {
			if i > 3 && len(rest) == 0 && strings.TrimSpace(l) == "" {
				rest = lines[i+1:]
			}
			continue
		}
		cmd, what, _ := strings.Cut(strings.TrimPrefix(l, "  "), "  ")
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", esc(strings.TrimSpace(cmd)), esc(strings.TrimSpace(what)))
	}
	fmt.Fprintln(w, ".SH NOTES")
	for _, l := range rest {
		if strings.TrimSpace(l) != "" {
			fmt.Fprintln(w, esc(l))
		}
	}
	fmt.Fprintln(w, ".SH FILES\n.TP\n.B /etc/hearth/hearth.yaml\nthe configuration\n.SH SEE ALSO\n/usr/share/doc/hearth/install.md")
}
