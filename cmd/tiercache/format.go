package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// age formats how long before now t was, e.g. "2s ago"; "never" for the
// zero time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Second:
		d = d.Round(time.Millisecond)
	default:
		d = d.Round(time.Second)
	}
	return d.String() + " ago"
}

// bytesIEC formats n bytes with a binary unit: "512B", "1.5KiB", "32.0MiB".
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// percent formats a ratio in [0, 1] as "93.1%", or "-" when there was
// nothing to count.
func percent(ratio float64, reads uint64) string {
	if reads == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*ratio)
}

// latency formats a histogram bound, or "-" without observations.
func latency(d time.Duration, n uint64) string {
	if n == 0 {
		return "-"
	}
	return d.String()
}

// writeJSON writes v as indented JSON (non-printable characters escaped:
// escapeJSON) and a newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(escapeJSON(b), '\n'))
	return err
}

// plural formats n things: "1 key", "2 keys".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// printable returns s as it is when every character of it is printable
// (strconv.IsPrint: no control character, so no escape sequence, and no
// tab to split a table's columns) and it does not start with a double
// quote; otherwise s quoted and escaped as a Go string, "\x1b[31m...". Every
// string from Redis that a table shows goes through it: nothing read there
// moves the cursor, recolours or retitles the operator's terminal.
func printable(s string) string {
	if !strings.HasPrefix(s, `"`) && allPrintable(s) {
		return s
	}
	return strconv.Quote(s)
}

// allPrintable reports whether s is UTF-8 of printable characters only.
func allPrintable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// escapeText returns s with every character that is not printable, but
// newlines, escaped as in a Go string (\x1b, \u009b); invalid UTF-8 as
// \xNN. Error messages go through it before they reach the terminal.
func escapeText(s string) string {
	if allPrintable(strings.ReplaceAll(s, "\n", "")) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\n' || (r != utf8.RuneError && strconv.IsPrint(r)):
			b.WriteRune(r)
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				fmt.Fprintf(&b, `\x%02x`, s[i])
			} else {
				b.WriteString(`\ufffd`)
			}
		default:
			q := strconv.QuoteRune(r) // '\x1b'
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// escapeJSON returns the JSON text b with every character that is not
// printable and that encoding/json writes as it is (DEL, the C1 controls
// such as U+009B, a one-byte CSI; format characters such as bidirectional
// overrides) written as a \u escape instead: JSON that reaches a terminal
// cannot drive it either. Such characters can only be inside strings, where
// the escape means the same character.
func escapeJSON(b []byte) []byte {
	keep := func(r rune) bool { return r == '\n' || strconv.IsPrint(r) }
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return !keep(r) }) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for _, r := range string(b) {
		switch r1, r2 := utf16.EncodeRune(r); {
		case keep(r):
			out = utf8.AppendRune(out, r)
		case r1 != utf8.RuneError:
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
	}
	return out
}

// shortList joins the first n names with commas, saying how many more
// there are.
func shortList(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ",")
	}
	return strings.Join(names[:n], ",") + fmt.Sprintf(",+%d more", len(names)-n)
}
