// Command tiercache is the tiercache command-line tool. For now it has one
// subcommand, demo, which shows two replicas sharing one Redis: reads served
// per tier, and an update on one replica seen by the other.
//
//	tiercache demo                  # against an embedded Redis (no install)
//	tiercache demo --redis ADDR     # against a real Redis at ADDR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/redis/go-redis/v9"
)

// Exit codes scripts can rely on.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // bad subcommand or flags
)

func main() {
	// go-redis logs dial failures on its own; the commands report errors
	// once, with what to do, so its logger is silenced here (process-wide
	// state, which a main package may set).
	redis.SetLogger(quietLogger{})
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// quietLogger discards go-redis's internal log lines.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "two replicas on one Redis: tiers, invalidation", runDemo},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tiercache <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'tiercache <command> --help' for a command's flags.")
}

// errUsage marks errors that are the caller's: bad flags or arguments.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "tiercache %s: %v\n", c.name, err)
			return exitUsage
		default:
			fmt.Fprintf(stderr, "tiercache %s: %v\n", c.name, err)
			return exitError
		}
	}
	fmt.Fprintf(stderr, "tiercache: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}
