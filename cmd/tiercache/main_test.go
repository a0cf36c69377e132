package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tiercache/tiercache/internal/redistest"
)

// TestMain runs the CLI instead of the tests when the tests run the test
// binary as the CLI (subprocessEnv): the CLI is tested as a process, with
// its exit codes, signals and output, as operators run it. Before it exits
// it writes its peak resident set to the file named by hwmEnv, if any.
func TestMain(m *testing.M) {
	if os.Getenv(subprocessEnv) == "1" {
		code := runMain()
		if f := os.Getenv(hwmEnv); f != "" {
			writeHWM(f)
		}
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

// TestDemoCLI runs the main job briefly on a real redis-server: three
// catalog replicas, cache on then off, and a report that shows no stale
// read, fewer DB queries per page with the cache, and an HTML page.
func TestDemoCLI(t *testing.T) {
	srv := redistest.Start(t)
	html := filepath.Join(t.TempDir(), "report.html")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--redis", srv.Addr, "--duration", "1s", "--products", "50", "--workers", "4", "--html", html}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("demo exit = %d; stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	for _, want := range []string{"cache on", "cache off", "DB queries/request", "hit ratio", "Invalidation lag", "views counted", "HTML report: " + html} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo report lacks %q:\n%s", want, out.String())
		}
	}
	if got := reportRow(t, out.String(), "stale reads"); len(got) < 1 || got[0] != "0" {
		t.Errorf("stale reads with the cache on = %v; want 0\n%s", got, out.String())
	}
	page, err := os.ReadFile(html)
	if err != nil || !bytes.Contains(page, []byte("<svg")) {
		t.Errorf("HTML report: %v; want a page with charts", err)
	}
	if !strings.Contains(errOut.String(), "cache on") {
		t.Errorf("no progress line on stderr:\n%s", errOut.String())
	}
}

// TestDemoCLIEmbeddedRedis: with --embedded the demo needs no install.
func TestDemoCLIEmbeddedRedis(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--embedded", "--duration", "300ms", "--products", "20", "--workers", "2"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("demo exit = %d; stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	if !strings.Contains(out.String(), "embedded") {
		t.Errorf("demo with --embedded did not use the embedded Redis:\n%s", out.String())
	}
	if got := reportRow(t, out.String(), "stale reads"); len(got) < 1 || got[0] != "0" {
		t.Errorf("stale reads with the cache on = %v; want 0\n%s", got, out.String())
	}
}

// reportRow returns the fields after label on the report line that starts
// with it (labels are right-aligned, so leading spaces are skipped).
func reportRow(t *testing.T, report, label string) []string {
	t.Helper()
	for _, line := range strings.Split(report, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), label+" "); ok {
			return strings.Fields(rest)
		}
	}
	t.Errorf("report has no %q line", label)
	return nil
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		give     []string
		wantCode int
		wantErr  string
	}{
		{[]string{}, exitUsage, ""},
		{[]string{"help"}, exitOK, ""},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"demo", "--help"}, exitOK, ""}, // the help goes to stdout: TestHelpCLI
		{[]string{"demo", "--products", "0"}, exitUsage, "--products >= 10"},
		{[]string{"demo", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"demo", "--redis", "127.0.0.1:1"}, exitError, "is Redis reachable?"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tt.give, &out, &errOut); code != tt.wantCode {
				t.Errorf("exit = %d; want %d (stderr %q)", code, tt.wantCode, errOut.String())
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr = %q; want it to contain %q", errOut.String(), tt.wantErr)
			}
		})
	}
}
