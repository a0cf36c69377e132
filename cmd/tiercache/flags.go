package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tiercache/tiercache"
)

// Connection defaults and the environment variables that override them.
const (
	defaultAddr    = "127.0.0.1:6379"
	defaultTimeout = 2 * time.Second
	envAddr        = "TIERCACHE_ADDR"
	envPassword    = "TIERCACHE_PASSWORD"
)

// commandFlags is the flag set of one subcommand, with what its --help
// prints around the flags.
type commandFlags struct {
	*flag.FlagSet
	synopsis []string // the usage lines, without "usage: "
	about    string   // what the command does, a paragraph or two
	conn     *connFlags
}

// newCommandFlags returns the flag set of subcommand name, with the shared
// connection flags when conn is set. Parse errors are returned, never
// printed: run prints them once.
func newCommandFlags(name string, synopsis []string, about string, conn bool) *commandFlags {
	cf := &commandFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, about: about}
	cf.SetOutput(io.Discard)
	cf.Usage = func() {}
	if conn {
		cf.conn = addConnFlags(cf.FlagSet)
	}
	return cf
}

// help prints the command's usage, flags and exit codes to w.
func (cf *commandFlags) help(w io.Writer) {
	for i, s := range cf.synopsis {
		prefix := "usage: "
		if i > 0 {
			prefix = "       "
		}
		fmt.Fprintf(w, "%stiercache %s\n", prefix, s)
	}
	fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cf.about))
	printFlags(w, cf.FlagSet, "flags", func(f *flag.Flag) bool { return !isConnFlag(f.Name) })
	printFlags(w, cf.FlagSet, "connection flags", func(f *flag.Flag) bool { return isConnFlag(f.Name) })
	fmt.Fprintf(w, "\nFlags may come before or after the arguments; '--' ends the flags (for a key such as -1).\n\n%s\n", exitCodesHelp)
}

// printFlags prints, under title, the flags of fs that keep accepts, with
// their usage and default, as flag.PrintDefaults does but with "--".
func printFlags(w io.Writer, fs *flag.FlagSet, title string, keep func(*flag.Flag) bool) {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if !keep(f) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(&b, " %s", name)
		}
		b.WriteString("\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	})
	if b.Len() > 0 {
		fmt.Fprintf(w, "\n%s:\n%s", title, b.String())
	}
}

// parse parses args, flags and arguments in any order, and returns the
// arguments. After "--" everything is an argument. --help prints the help
// to stdout and returns flag.ErrHelp; a bad flag is a usage error. The
// connection flags, when present, are checked too.
func (cf *commandFlags) parse(args []string, stdout io.Writer) ([]string, error) {
	var rest []string
	for {
		err := cf.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			cf.help(stdout)
			return nil, err
		}
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		left := cf.Args()
		if len(left) == 0 {
			break
		}
		if used := len(args) - len(left); used > 0 && args[used-1] == "--" {
			rest = append(rest, left...)
			break
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
	if cf.conn != nil {
		if err := cf.conn.check(); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// connFlags are the connection flags every subcommand but demo shares.
type connFlags struct {
	addr          string
	cluster       bool
	username      string
	password      string
	tls           bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
	namespace     string
	channel       string
	timeout       time.Duration
}

func addConnFlags(fs *flag.FlagSet) *connFlags {
	c := &connFlags{}
	addr := os.Getenv(envAddr)
	if addr == "" {
		addr = defaultAddr
	}
	fs.StringVar(&c.addr, "addr", addr, "Redis `host:port`; several, comma-separated, for a Cluster (env "+envAddr+")")
	fs.BoolVar(&c.cluster, "cluster", false, "speak Redis Cluster even with one address")
	fs.StringVar(&c.username, "username", "", "Redis ACL user")
	fs.StringVar(&c.password, "password", "", "Redis password; better set "+envPassword+": a flag shows in ps and in shell history")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (the server is always verified)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM `file` of the CAs that verify the server (default: the system roots)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM `file` of a client certificate, with --tls-key")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM `file` of the client certificate's key")
	fs.StringVar(&c.tlsServerName, "tls-server-name", "", "`name` to verify in the server's certificate (default: the host dialled)")
	fs.StringVar(&c.namespace, "namespace", tiercache.DefaultNamespace, "tiercache namespace: the prefix of every key")
	fs.StringVar(&c.channel, "channel", "", "invalidation channel (default <namespace>:invalidate)")
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "dial and command timeout")
	return c
}

// isConnFlag reports whether name is one of the flags of addConnFlags.
func isConnFlag(name string) bool {
	switch name {
	case "addr", "cluster", "username", "password", "tls", "tls-ca", "tls-cert", "tls-key",
		"tls-server-name", "namespace", "channel", "timeout":
		return true
	}
	return false
}

// check validates the connection flags and fills in what comes from the
// environment or from other flags.
func (c *connFlags) check() error {
	if c.password == "" {
		c.password = os.Getenv(envPassword)
	}
	switch {
	case len(c.addrs()) == 0:
		return usageErrorf("--addr is empty: give host:port")
	case c.timeout <= 0:
		return usageErrorf("--timeout %v: want a positive duration", c.timeout)
	case c.namespace == "":
		return usageErrorf("--namespace is empty")
	case strings.ContainsAny(c.namespace, ": \t\r\n"):
		return usageErrorf("--namespace %q contains ':' or whitespace", c.namespace)
	case !c.tls && (c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" || c.tlsServerName != ""):
		return usageErrorf("--tls-ca, --tls-cert, --tls-key and --tls-server-name need --tls")
	}
	if c.channel == "" {
		c.channel = c.namespace + ":invalidate"
	}
	return nil
}

// addrs returns the addresses of --addr, without blanks.
func (c *connFlags) addrs() []string {
	var out []string
	for a := range strings.SplitSeq(c.addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
