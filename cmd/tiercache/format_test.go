package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostileStrings hold what a terminal would act on: C0 and C1 escape
// sequences, DEL, a bidirectional override, a tag character, a tab and
// invalid UTF-8.
var hostileStrings = []string{"\x1b[2J\x1b[H", "\x1b]0;title\a", "\u009b31m", "del\x7f", "\u202eevil", "tag\U000E0041", "a\tb", "bad\xffutf8"}

// unsafeRune reports a character that printable, escapeText and escapeJSON
// must never let through: any that strconv.IsPrint refuses.
func unsafeRune(s string, keep rune) (rune, bool) {
	for _, r := range s {
		if r == keep {
			continue
		}
		if r == utf8.RuneError || r < 0x20 || (r >= 0x7f && r < 0xa0) || r == '\u202e' || r == '\U000E0041' {
			return r, true
		}
	}
	return 0, false
}

func TestPrintable(t *testing.T) {
	tests := []struct {
		give, want string
	}{
		{"replica-a", "replica-a"},
		{"héllo wörld", "héllo wörld"},
		{"\x1b[31mred", `"\x1b[31mred"`},
		{"\u009b2J", `"\u009b2J"`},
		{"a\tb", `"a\tb"`},
		{`"quoted"`, `"\"quoted\""`}, // else it could pass for an escaped one
		{"bad\xff", `"bad\xff"`},
	}
	for _, tt := range tests {
		if got := printable(tt.give); got != tt.want {
			t.Errorf("printable(%q) = %s; want %s", tt.give, got, tt.want)
		}
	}
	for _, s := range hostileStrings {
		if r, bad := unsafeRune(printable(s), 0); bad {
			t.Errorf("printable(%q) = %q holds %U", s, printable(s), r)
		}
	}
}

func TestEscapeText(t *testing.T) {
	if got, want := escapeText("line 1\nline \x1b[2J2 \xff"), `line 1`+"\n"+`line \x1b[2J2 \xff`; got != want {
		t.Errorf("escapeText = %q; want %q", got, want)
	}
	for _, s := range hostileStrings {
		if r, bad := unsafeRune(escapeText(s+"\n"), '\n'); bad {
			t.Errorf("escapeText(%q) = %q holds %U", s, escapeText(s), r)
		}
	}
}

// TestEscapeJSON: the JSON of hostile strings, escaped, holds no character
// a terminal acts on, and decodes to what encoding/json made of them.
func TestEscapeJSON(t *testing.T) {
	v := map[string]any{"list": hostileStrings, "plain": "héllo"}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got := escapeJSON(b)
	if r, bad := unsafeRune(string(got), '\n'); bad {
		t.Errorf("escapeJSON holds %U:\n%s", r, got)
	}
	var want, back any
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("escapeJSON made invalid JSON: %v\n%s", err, got)
	}
	if fmt.Sprint(back) != fmt.Sprint(want) {
		t.Errorf("escapeJSON decodes to %q; want %q", back, want)
	}
	if plain := []byte(`{"a": "héllo"}`); string(escapeJSON(plain)) != string(plain) {
		t.Errorf("escapeJSON changed printable JSON: %s", escapeJSON(plain))
	}
}

func TestFirstErrors(t *testing.T) {
	var errs []error
	for i := range 25 {
		errs = append(errs, fmt.Errorf("record %d", i))
	}
	got := firstErrors(errors.Join(errs...), 20).Error()
	if n := strings.Count(got, "record "); n != 20 || !strings.HasSuffix(got, "... and 5 more") {
		t.Errorf("firstErrors of 25 = %d records named, %q at the end; want 20 and ... and 5 more", n, got[max(0, len(got)-20):])
	}
	if !errors.Is(firstErrors(errors.Join(errs...), 20), errs[0]) {
		t.Error("firstErrors does not wrap the errors it keeps")
	}
	one := errors.New("one")
	if got := firstErrors(one, 20); got != one {
		t.Errorf("firstErrors(one) = %v; want it as it is", got)
	}
	if got := firstErrors(nil, 20); got != nil {
		t.Errorf("firstErrors(nil) = %v; want nil", got)
	}
}

func TestShortList(t *testing.T) {
	tests := []struct {
		give []string
		want string
	}{
		{nil, ""},
		{[]string{"a", "b"}, "a,b"},
		{[]string{"a", "b", "c", "d"}, "a,b,c,+1 more"},
	}
	for _, tt := range tests {
		if got := shortList(tt.give, 3); got != tt.want {
			t.Errorf("shortList(%q, 3) = %q; want %q", tt.give, got, tt.want)
		}
	}
}
