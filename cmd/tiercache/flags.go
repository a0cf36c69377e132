package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// Connection defaults.
const (
	defaultAddr    = "127.0.0.1:6379"
	defaultTimeout = 2 * time.Second
)

// envPrefix starts the name of the environment variable of every
// connection flag: TIERCACHE_ and the flag's name in capitals, '-' as '_'
// (envName). A flag on the command line wins over its variable.
const envPrefix = "TIERCACHE_"

// The variables that messages name.
var (
	envAddr      = envName("addr")
	envPassword  = envName("password")
	envNamespace = envName("namespace")
)

// envName returns the environment variable of the connection flag name.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

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
	if cf.conn != nil {
		fmt.Fprintf(w, "\nFlags may come before or after the arguments; '--' ends the flags (for a key such as -1).\n")
		fmt.Fprintf(w, "\n%s\n", envHelp)
	}
	fmt.Fprintf(w, "\n%s\n", exitCodesHelp)
}

// envHelp is what the help of a command with connection flags says of the
// environment.
const envHelp = `environment:
  Every connection flag may be set in the environment instead, as the
  variable named with it above: ` + envPrefix + ` and the flag's name in capitals,
  '-' as '_' (` + envPrefix + `ADDR, ` + envPrefix + `NAMESPACE, ` + envPrefix + `TLS_CA...). A flag
  on the command line wins over its variable; an empty variable is ignored.
  Boolean variables take 1, true, 0 or false.`

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
		var notes []string
		// A usage that ends with its own "(default: ...)" takes the
		// other notes inside it.
		if i := strings.LastIndex(usage, " (default"); i >= 0 && strings.HasSuffix(usage, ")") {
			notes = append(notes, usage[i+2:len(usage)-1])
			usage = usage[:i]
		}
		b.WriteString("\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			notes = append(notes, "default "+f.DefValue)
		}
		if isConnFlag(f.Name) {
			notes = append(notes, "env "+envName(f.Name))
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(notes, "; "))
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
		if err := cf.conn.fromEnv(cf.FlagSet, os.LookupEnv); err != nil {
			return nil, err
		}
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
	pubsubMode    string
	timeout       time.Duration

	// source names where each flag set from the command line or the
	// environment got its value ("--addr", "TIERCACHE_ADDR"), by flag name.
	source map[string]string
}

func addConnFlags(fs *flag.FlagSet) *connFlags {
	c := &connFlags{source: map[string]string{}}
	fs.StringVar(&c.addr, "addr", defaultAddr, "Redis `host:port`; several, comma-separated, for a Cluster")
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
	fs.StringVar(&c.pubsubMode, "pubsub-mode", tiercache.PubSubAuto, "how invalidations travel, as the replicas' pubsub_mode: `auto` (sharded on a Cluster), sharded or classic")
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "dial and command timeout")
	return c
}

// isConnFlag reports whether name is one of the flags of addConnFlags.
func isConnFlag(name string) bool {
	switch name {
	case "addr", "cluster", "username", "password", "tls", "tls-ca", "tls-cert", "tls-key",
		"tls-server-name", "namespace", "channel", "pubsub-mode", "timeout":
		return true
	}
	return false
}

// fromEnv sets each connection flag of fs that the command line left
// unset from its environment variable (envName), when that is set and not
// empty; lookup is os.LookupEnv. A value the flag refuses is a usage
// error naming the variable.
func (c *connFlags) fromEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	fs.Visit(func(f *flag.Flag) {
		if isConnFlag(f.Name) {
			c.source[f.Name] = "--" + f.Name
		}
	})
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || !isConnFlag(f.Name) || c.source[f.Name] != "" {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok || v == "" {
			return
		}
		if fs.Set(f.Name, v) != nil {
			shown := fmt.Sprintf("=%q", v)
			if f.Name == "password" {
				shown = ""
			}
			kind, _ := flag.UnquoteUsage(f)
			if kind == "" {
				kind = "boolean: 1, true, 0 or false"
			}
			err = usageErrorf("environment variable %s%s, for --%s: not a valid %s", name, shown, f.Name, kind)
			return
		}
		c.source[f.Name] = name
	})
	return err
}

// from names where flag name got its value, for messages: "--addr" or
// "TIERCACHE_ADDR", or "--addr" when it has its default.
func (c *connFlags) from(name string) string {
	if s := c.source[name]; s != "" {
		return s
	}
	return "--" + name
}

// check validates the connection flags and fills in what comes from other
// flags.
func (c *connFlags) check() error {
	switch {
	case len(c.addrs()) == 0:
		return usageErrorf("%s is empty: give host:port", c.from("addr"))
	case c.timeout <= 0:
		return usageErrorf("%s %v: want a positive duration", c.from("timeout"), c.timeout)
	case c.namespace == "":
		return usageErrorf("%s is empty", c.from("namespace"))
	case strings.ContainsAny(c.namespace, ": \t\r\n"):
		return usageErrorf("%s %q contains ':' or whitespace", c.from("namespace"), c.namespace)
	case c.pubsubMode != tiercache.PubSubAuto && c.pubsubMode != tiercache.PubSubSharded && c.pubsubMode != tiercache.PubSubClassic:
		return usageErrorf("%s %q: want auto, sharded or classic", c.from("pubsub-mode"), c.pubsubMode)
	case !c.tls && (c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" || c.tlsServerName != ""):
		return usageErrorf("--tls-ca, --tls-cert, --tls-key and --tls-server-name (or their %s variables) need --tls (or %s=1)", envPrefix, envName("tls"))
	}
	if c.channel == "" {
		c.channel = c.namespace + ":invalidate"
	}
	return nil
}

// sharded reports whether invalidations travel on sharded pub/sub with
// client, as a replica with pubsub_mode --pubsub-mode decides: sharded, or
// auto on a Cluster client.
func (c *connFlags) sharded(client redis.UniversalClient) bool {
	_, cluster := client.(*redis.ClusterClient)
	return c.pubsubMode == tiercache.PubSubSharded || c.pubsubMode == tiercache.PubSubAuto && cluster
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
