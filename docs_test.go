package tiercache_test

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/codec"
)

// configKey is one leaf key of Config, found by reflection.
type configKey struct {
	path     string // yaml path from the top of Config: "keyspaces.<name>.lease.ttl"
	goPath   string // Go field path from Config, or from KeyspaceConfig for keyspace keys
	keyspace bool   // a key of KeyspaceConfig, under keyspaces.<name>.
	index    []int  // field index from Config, or from KeyspaceConfig
	typ      reflect.Type
}

// configKeys walks t (Config or KeyspaceConfig, or a struct nested in them)
// and appends its leaf keys. Every exported field needs a yaml tag, and a
// json tag of the same name or "-": docs/configuration.md says so.
func configKeys(t *testing.T, typ reflect.Type, yamlPrefix, goPrefix string, index []int, keyspace bool, out *[]configKey) {
	t.Helper()
	durationType := reflect.TypeFor[time.Duration]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			t.Errorf("%s%s has no yaml name", goPrefix, f.Name)
			continue
		}
		if js, _, _ := strings.Cut(f.Tag.Get("json"), ","); js != name && js != "-" {
			t.Errorf("%s%s: json name %q differs from yaml name %q", goPrefix, f.Name, js, name)
		}
		idx := append(slices.Clone(index), i)
		switch {
		case f.Type.Kind() == reflect.Map && f.Type.Elem() == reflect.TypeFor[tiercache.KeyspaceConfig]():
			configKeys(t, f.Type.Elem(), yamlPrefix+name+".<name>.", "", nil, true, out)
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			configKeys(t, f.Type, yamlPrefix+name+".", goPrefix+f.Name+".", idx, keyspace, out)
		default:
			*out = append(*out, configKey{yamlPrefix + name, goPrefix + f.Name, keyspace, idx, f.Type})
		}
	}
}

// docRow is one row of a key table of docs/configuration.md.
type docRow struct {
	line                int
	key, goField, deflt string // cells as written
}

// docKeyTables returns the rows of the tables of page whose header's first
// cell is "key". Cells are split on '|' (the page writes none inside a cell).
func docKeyTables(page []byte) []docRow {
	var rows []docRow
	lines := strings.Split(string(page), "\n")
	cells := func(s string) []string {
		s = strings.TrimSpace(s)
		s = strings.TrimSuffix(strings.TrimPrefix(s, "|"), "|")
		cs := strings.Split(s, "|")
		for i := range cs {
			cs[i] = strings.TrimSpace(cs[i])
		}
		return cs
	}
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "|") || !strings.HasPrefix(lines[i+1], "|---") {
			continue
		}
		keyTable := cells(lines[i])[0] == "key"
		for i += 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			if !keyTable {
				continue
			}
			cs := append(cells(lines[i]), "", "", "")
			rows = append(rows, docRow{line: i + 1, key: cs[0], goField: cs[1], deflt: cs[2]})
		}
	}
	return rows
}

// loneLiteral matches a cell that is one literal in backticks, and nothing else.
var loneLiteral = regexp.MustCompile("^`([^`]+)`$")

// TestConfigurationDocumented keeps docs/configuration.md true to Config and
// KeyspaceConfig. The page documents a key in a table whose header's first
// cell is "key". Each row of such a table holds, in its first cell, the
// key's full yaml path from the top of Config in backticks, with "<name>"
// standing for a keyspace's name (`keyspaces.<name>.write_behind.batch_size`,
// `redis.tls.ca_file`); in its second, the Go field's path in backticks, from
// Config, or from KeyspaceConfig for the keys under keyspaces.<name>.
// (`Redis.TLS.CAFile`, `WriteBehind.BatchSize`); in its third, the default.
// The test fails when the page names a key that the structs do not have,
// leaves one out, names one twice, or gives a wrong Go field; and when a
// default cell that is one literal in backticks (`500ms`, `100`, `32 MiB`,
// `false`, `UTC`) is not the default that New and NewKeyspace apply.
// Defaults written otherwise ("random", "= `ttl`", "`0s` (off)") are
// explanations, not checked; a string literal holding '<' is a pattern.
func TestConfigurationDocumented(t *testing.T) {
	var keys []configKey
	configKeys(t, reflect.TypeFor[tiercache.Config](), "", "", nil, false, &keys)
	want := make(map[string]configKey, len(keys))
	for _, k := range keys {
		want[k.path] = k
	}

	page, err := os.ReadFile("docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := docKeyTables(page)
	if len(rows) == 0 {
		t.Fatal("docs/configuration.md has no table whose first column is \"key\"")
	}

	cfg, ksCfg, leaseCfg := appliedDefaults(t)
	seen := make(map[string]int)
	for _, r := range rows {
		m := loneLiteral.FindStringSubmatch(r.key)
		if m == nil {
			t.Errorf("docs/configuration.md:%d: first cell %q is not one key in backticks", r.line, r.key)
			continue
		}
		path := m[1]
		k, ok := want[path]
		if !ok {
			t.Errorf("docs/configuration.md:%d: names key %q, which Config does not have", r.line, path)
			continue
		}
		if prev, dup := seen[path]; dup {
			t.Errorf("docs/configuration.md:%d: key %q documented again (first on line %d)", r.line, path, prev)
			continue
		}
		seen[path] = r.line
		if got := "`" + k.goPath + "`"; r.goField != got {
			t.Errorf("docs/configuration.md:%d: key %q: Go field %s; want %s", r.line, path, r.goField, got)
		}
		lit := loneLiteral.FindStringSubmatch(r.deflt)
		if lit == nil {
			continue
		}
		var v reflect.Value
		switch {
		case !k.keyspace:
			v = reflect.ValueOf(cfg).FieldByIndex(k.index)
		case strings.HasPrefix(path, "keyspaces.<name>.lease.") && path != "keyspaces.<name>.lease.enabled":
			// lease.poll takes its default only with leases enabled.
			v = reflect.ValueOf(leaseCfg).FieldByIndex(k.index)
		default:
			v = reflect.ValueOf(ksCfg).FieldByIndex(k.index)
		}
		if d, ok := appliedLater[path]; ok {
			v = reflect.ValueOf(d)
		}
		if err := checkDefault(lit[1], v); err != nil {
			t.Errorf("docs/configuration.md:%d: key %q: default %s: %v", r.line, path, r.deflt, err)
		}
	}
	for _, k := range keys {
		if _, ok := seen[k.path]; !ok {
			t.Errorf("docs/configuration.md leaves out key %q (%s)", k.path, k.goPath)
		}
	}
}

// appliedLater holds the defaults that Cache.Config and Keyspace.Config
// leave at zero for the package below that applies them.
var appliedLater = map[string]any{
	"read_timeout":                    tiercache.DefaultReadTimeout,  // l2.Options.ReadTimeout
	"write_timeout":                   tiercache.DefaultWriteTimeout, // l2.Options.WriteTimeout
	"keyspaces.<name>.compress_above": codec.DefaultCompressAbove,    // codec.Options.CompressAbove
}

// appliedDefaults returns the configurations in force for a zero Config, a
// zero KeyspaceConfig, and a KeyspaceConfig with leases enabled, as New and
// NewKeyspace fill them. Neither dials Redis.
func appliedDefaults(t *testing.T) (tiercache.Config, tiercache.KeyspaceConfig, tiercache.KeyspaceConfig) {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { client.Close() })
	c, err := tiercache.New(client, tiercache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(t.Context()) })
	ks, err := tiercache.NewKeyspace[string, string](c, "defaults", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	leased, err := tiercache.NewKeyspace[string, string](c, "leased", tiercache.KeyspaceConfig{
		Lease: tiercache.LeaseConfig{Enabled: true, TTL: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c.Config(), ks.Config(), leased.Config()
}

// checkDefault reports whether lit, a default as the page writes it, is v.
func checkDefault(lit string, v reflect.Value) error {
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(lit)
		if err != nil {
			return fmt.Errorf("not a duration: %v", err)
		}
		if got := time.Duration(v.Int()); d != got {
			return fmt.Errorf("the default applied is %v", got)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := parseSize(lit)
		if err != nil {
			return err
		}
		if n != v.Int() {
			return fmt.Errorf("the default applied is %d", v.Int())
		}
	case reflect.Bool:
		b, err := strconv.ParseBool(lit)
		if err != nil {
			return err
		}
		if b != v.Bool() {
			return fmt.Errorf("the default applied is %v", v.Bool())
		}
	case reflect.Float64:
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil {
			return err
		}
		if f != v.Float() {
			return fmt.Errorf("the default applied is %v", v.Float())
		}
	case reflect.String:
		if !strings.Contains(lit, "<") && lit != v.String() {
			return fmt.Errorf("the default applied is %q", v.String())
		}
	default:
		return fmt.Errorf("cannot check a default of type %v", v.Type())
	}
	return nil
}

// parseSize parses an integer, optionally followed by " KiB" or " MiB".
func parseSize(s string) (int64, error) {
	num, unit, _ := strings.Cut(s, " ")
	n, err := strconv.ParseInt(strings.ReplaceAll(num, ",", ""), 10, 64)
	if err != nil {
		return 0, err
	}
	switch unit {
	case "":
		return n, nil
	case "KiB":
		return n << 10, nil
	case "MiB":
		return n << 20, nil
	}
	return 0, fmt.Errorf("unknown unit %q", unit)
}

// TestReadmeCodeFromExamples keeps the Go code of README.md compiling and
// tested: every ```go block of README.md must be, line for line, the body
// of an Example function of this package (the function's lines between its
// braces, one tab of indentation removed), so the README prints code that
// runs, with the output its // Output: comment checks.
func TestReadmeCodeFromExamples(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	bodies := exampleBodies(t, "example_test.go", "example_counter_test.go")
	blocks := goBlocks(readme)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block")
	}
	for _, b := range blocks {
		if !slices.Contains(bodies, b.text) {
			t.Errorf("README.md:%d: this ```go block is not the body of an Example in example_test.go or example_counter_test.go; copy it from one:\n%s", b.line, b.text)
		}
	}
}

type codeBlock struct {
	line int
	text string
}

// goBlocks returns the fenced ```go blocks of a Markdown page.
func goBlocks(page []byte) []codeBlock {
	var blocks []codeBlock
	lines := strings.Split(string(page), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		start := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
		}
		blocks = append(blocks, codeBlock{start, strings.Join(lines[start:i], "\n")})
	}
	return blocks
}

// exampleBodies returns the bodies of the Example functions of files: the
// lines between the braces, less one tab of indentation.
func exampleBodies(t *testing.T, files ...string) []string {
	t.Helper()
	var bodies []string
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Example") {
				continue
			}
			body := src[fset.Position(fn.Body.Lbrace).Offset+1 : fset.Position(fn.Body.Rbrace).Offset]
			body = bytes.TrimPrefix(body, []byte("\n"))
			body = bytes.TrimSuffix(body, []byte("\n"))
			lines := strings.Split(string(body), "\n")
			for i, l := range lines {
				lines[i] = strings.TrimPrefix(l, "\t")
			}
			bodies = append(bodies, strings.Join(lines, "\n"))
		}
	}
	return bodies
}
