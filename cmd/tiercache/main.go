// Command tiercache is the operator's tool for tiercache: it looks inside the
// cache of a running service and invalidates by hand, through the same Redis
// keys, scripts and invalidation messages as the library.
//
//	tiercache replicas                      # the live replicas, from their presence records
//	tiercache stats [--keyspace KS]         # hits per tier, loads, p99 load latency, per replica and in total
//	tiercache get KEYSPACE KEY              # one value as JSON: envelope, TTL, decoded body, tags
//	tiercache invalidate KEYSPACE KEY...    # delete keys and evict them from every replica's L1
//	tiercache invalidate KEYSPACE --tag T   # delete every value tagged T
//	tiercache invalidate KEYSPACE --all     # delete the whole keyspace and flush every L1
//	tiercache watch [--count N] [--json]    # the invalidations on the channel, live
//	tiercache check [--wait D]              # a canary: did every replica apply it, how fast
//	tiercache demo                          # three catalog replicas under load, cache on and off
//
// Every subcommand but demo takes the same connection flags: --addr
// (comma-separated for a Cluster; default 127.0.0.1:6379), --cluster,
// --username, --password, --tls, --tls-ca, --tls-cert, --tls-key,
// --tls-server-name, --namespace (default tiercache), --channel (default
// <namespace>:invalidate) and --timeout (dial and command timeout, default
// 2s). Run 'tiercache <command> --help' (or 'tiercache help <command>') for
// a command's flags and arguments.
//
// # Environment
//
// Each connection flag may be set in the environment instead, as TIERCACHE_
// and the flag's name in capitals, '-' as '_': TIERCACHE_ADDR,
// TIERCACHE_CLUSTER, TIERCACHE_USERNAME, TIERCACHE_PASSWORD (better than
// --password, which shows in ps), TIERCACHE_TLS, TIERCACHE_TLS_CA,
// TIERCACHE_TLS_CERT, TIERCACHE_TLS_KEY, TIERCACHE_TLS_SERVER_NAME,
// TIERCACHE_NAMESPACE, TIERCACHE_CHANNEL and TIERCACHE_TIMEOUT. A flag on
// the command line wins over its variable; an empty variable is ignored.
// demo reads none of them.
//
// The CLI never registers itself as a replica: it writes no presence record.
//
// # Exit codes
//
// Scripts can rely on these:
//
//	0  ok
//	1  the command ran and failed
//	2  usage: unknown subcommand, bad flags, arguments or environment variables, unknown keyspace,
//	   malformed key or tag (get: a key that cannot be one of the keyspace's, such as a key that is
//	   not an integer in a keyspace of integer keys)
//	3  not found: get of a key that is not in Redis; replicas, stats or check finding no live replica
//	   in the namespace (they then name the namespaces that have some)
//	4  Redis unreachable: the dial or PING failed or timed out, or Redis refused the TLS handshake or the credentials
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Exit codes scripts can rely on (see the package doc).
const (
	exitOK          = 0
	exitError       = 1 // the command ran and failed
	exitUsage       = 2 // bad subcommand, flags, arguments or variables; unknown keyspace; malformed key
	exitNotFound    = 3 // get of a missing key; no live replica in the namespace
	exitUnreachable = 4 // Redis unreachable, or it refused TLS or the credentials
)

// exitCodesHelp documents the exit codes in every --help.
const exitCodesHelp = `exit codes:
  0  ok
  1  the command ran and failed
  2  usage: unknown subcommand, bad flags, arguments or environment variables,
     unknown keyspace, malformed key or tag (get: a key that cannot be one of
     the keyspace's, such as a key that is not an integer in a keyspace of
     integer keys)
  3  not found: get of a key that is not in Redis; replicas, stats or check
     finding no live replica in the namespace
  4  Redis unreachable, or it refused the TLS handshake or the credentials`

func main() { os.Exit(runMain()) }

// runMain runs the command line of the process and returns its exit code.
func runMain() int {
	// go-redis logs dial failures on its own; the commands report errors
	// once, with what to do, so its logger is silenced here (process-wide
	// state, which a main package may set).
	redis.SetLogger(quietLogger{})
	// SIGINT and SIGTERM cancel ctx: watch then exits 0, and the other
	// commands stop at their next call to Redis.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
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
		{"replicas", "the live replicas, from their presence records", runReplicas},
		{"stats", "hits, loads and latency per replica and keyspace, with totals", runStats},
		{"get", "one value from Redis as JSON: envelope, TTL, body, tags", runGet},
		{"invalidate", "delete keys, tagged values or a keyspace, and evict them from every L1", runInvalidate},
		{"watch", "print the invalidations published on the channel, live", runWatch},
		{"check", "publish a canary invalidation: did every replica apply it, how fast", runCheck},
		{"demo", "the catalog service, three replicas, cache on and off: what the cache changes", runDemo},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tiercache <command> [flags] [arguments]")
	fmt.Fprintln(w, "       tiercache help [command]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'tiercache <command> --help' or 'tiercache help <command>' for a command's flags.")
	fmt.Fprintln(w, "\nenvironment (every command but demo; a flag on the command line wins, an empty")
	fmt.Fprintln(w, "variable is ignored):")
	fs := flag.NewFlagSet("env", flag.ContinueOnError)
	addConnFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		_, about := flag.UnquoteUsage(f)
		about, _, _ = strings.Cut(about, ";")
		if f.DefValue != "" && f.DefValue != "false" {
			about += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  %-26s %-18s %s\n", envName(f.Name), "--"+f.Name, about)
	})
	fmt.Fprintln(w, "\n"+exitCodesHelp)
}

// errUsage marks errors that are the caller's: bad flags or arguments.
var errUsage = errors.New("usage")

// codedError is an error that chooses the exit code; its message is err's.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// usageErrorf returns an error that exits with exitUsage.
func usageErrorf(format string, a ...any) error {
	return &codedError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// notFoundErrorf returns an error that exits with exitNotFound.
func notFoundErrorf(format string, a ...any) error {
	return &codedError{code: exitNotFound, err: fmt.Errorf(format, a...)}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			usage(stderr)
			return exitUsage
		}
		if args[0] == "help" && len(args) > 1 {
			// tiercache help get: get's --help.
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		// Errors may quote what Redis holds: they are printed escaped.
		var coded *codedError
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &coded):
			fmt.Fprintf(stderr, "tiercache %s: %s\n", c.name, escapeText(err.Error()))
			if coded.code == exitUsage {
				fmt.Fprintf(stderr, "Run 'tiercache %s --help' for usage.\n", c.name)
			}
			return coded.code
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "tiercache %s: %s\n", c.name, escapeText(err.Error()))
			return exitUsage
		default:
			fmt.Fprintf(stderr, "tiercache %s: %s\n", c.name, escapeText(err.Error()))
			return exitError
		}
	}
	fmt.Fprintf(stderr, "tiercache: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}
