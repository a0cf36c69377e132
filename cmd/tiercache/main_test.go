package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tiercache/tiercache/internal/redistest"
)

// TestMain runs the CLI instead of the tests when the tests run the test
// binary as the CLI (subprocessEnv): the CLI is tested as a process, with
// its exit codes, signals and output, as operators run it.
func TestMain(m *testing.M) {
	if os.Getenv(subprocessEnv) == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

func TestCLIDemoRealRedis(t *testing.T) {
	srv := redistest.Start(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--redis", srv.Addr, "--keys", "20", "--rounds", "3"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("demo exit = %d; stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	for _, want := range []string{"replica-a", "replica-b", "L1 hits", "No replica served the old value",
		`serves  v1 "product 7" (from L1)`, `serves  v2 "product 7, now on sale" (from Redis)`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// Replica a loads all 20 from the database; b finds them in Redis.
	if !strings.Contains(out.String(), "120 reads, 20 database queries") {
		t.Errorf("demo output does not show 20 DB queries for 120 reads:\n%s", out.String())
	}
}

func TestCLIDemoEmbeddedRedis(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--keys", "10", "--rounds", "2"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("demo exit = %d; stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	if !strings.Contains(out.String(), "embedded") {
		t.Errorf("demo without --redis did not use the embedded Redis:\n%s", out.String())
	}
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
		{[]string{"demo", "--help"}, exitOK, "usage: tiercache demo"},
		{[]string{"demo", "--keys", "0"}, exitUsage, "--keys >= 1"},
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
