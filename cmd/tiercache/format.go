package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
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

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// plural formats n things: "1 key", "2 keys".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
