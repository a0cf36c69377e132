package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

// DefaultMaxOpenConns is the size of a DB's connection pool.
const DefaultMaxOpenConns = 8

// DB is the catalog's source of truth: a SQLite file, opened through
// database/sql with the pure-Go modernc.org/sqlite driver, that counts the
// SQL statements it runs. Queries counts them all; a context from
// CountQueries also counts the statements run on its behalf, so that a
// request can say how many it cost. BEGIN and COMMIT are not counted.
//
// Write transactions take SQLite's write lock when they begin (BEGIN
// IMMEDIATE), so that two replicas writing at once wait for each other
// (busy_timeout) instead of failing; reads run in read-only transactions,
// each a consistent snapshot (WAL mode).
type DB struct {
	sql     *sql.DB       // set by open, before any use
	latency time.Duration // added to each statement (SetQueryLatency)
	down    atomic.Bool   // reads and writes fail with ErrDatabaseDown (SetDown)

	queries  atomic.Int64 // statements run
	viewTx   atomic.Int64 // transactions (or autocommit statements) that wrote view counts
	viewRows atomic.Int64 // product rows whose views column they updated
}

// Open opens (creating if needed) the SQLite database at path. It does not
// create the schema: Seed does. Close it when done.
func Open(path string) (*DB, error) {
	d := &DB{}
	if err := d.open(path); err != nil {
		return nil, err
	}
	return d, nil
}

// open opens the database of a DB made without Open (by Module, which
// opens it on the lifecycle's start, so that an app that fails to build
// leaves nothing open).
func (d *DB) open(path string) error {
	if path == "" {
		return errors.New("catalog: open database: empty path")
	}
	q := url.Values{}
	q.Set("_busy_timeout", "10000") // ms: replicas share the file
	q.Set("_journal_mode", "WAL")   // readers never block the writer
	q.Set("_synchronous", "NORMAL") // durable across process crashes in WAL mode
	q.Set("_txlock", "immediate")   // write transactions lock at BEGIN: no upgrade deadlocks
	q.Set("_foreign_keys", "1")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("catalog: open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(DefaultMaxOpenConns)
	db.SetMaxIdleConns(DefaultMaxOpenConns)
	if err := db.Ping(); err != nil {
		db.Close()
		return fmt.Errorf("catalog: open database %s: %w", path, err)
	}
	d.sql = db
	return nil
}

// SetQueryLatency makes each statement wait d before it runs, emulating a
// database across the network (SQLite is in-process: a statement costs
// microseconds, where a networked database costs a round trip). For demos
// and benchmarks; 0, the default, adds nothing. Call it before use.
func (d *DB) SetQueryLatency(lat time.Duration) { d.latency = lat }

// ErrDatabaseDown is the error of every read and write transaction while
// the DB is down (SetDown).
var ErrDatabaseDown = errors.New("catalog: database unavailable")

// SetDown makes every read and write transaction fail with ErrDatabaseDown
// until it is called again with false, as an outage of a networked
// database would. For demos; safe for concurrent use.
func (d *DB) SetDown(down bool) { d.down.Store(down) }

// SQL returns the underlying *sql.DB. Statements run on it directly are not
// counted.
func (d *DB) SQL() *sql.DB { return d.sql }

// Close closes the database. Statements after Close fail.
func (d *DB) Close() error {
	if err := d.sql.Close(); err != nil {
		return fmt.Errorf("catalog: close database: %w", err)
	}
	return nil
}

// Queries returns the number of SQL statements run through d so far.
func (d *DB) Queries() int64 { return d.queries.Load() }

// ViewWrites returns the number of database writes of view counts so far
// (one per counter flush with the cache, one per view without it) and the
// product rows they updated.
func (d *DB) ViewWrites() (writes, rows int64) { return d.viewTx.Load(), d.viewRows.Load() }

// queryCount counts the statements run for one context.
type queryCount struct{ n atomic.Int64 }

type queryCountKey struct{}

// CountQueries returns a context that counts the DB statements run with it
// (or with a context derived from it, such as a tiercache load started by
// the request), and a function that reports how many so far.
func CountQueries(ctx context.Context) (context.Context, func() int64) {
	c := &queryCount{}
	return context.WithValue(ctx, queryCountKey{}, c), c.n.Load
}

// count records one statement, in all and for ctx, and waits the
// emulated latency, if any, or until ctx ends.
func (d *DB) count(ctx context.Context) {
	d.queries.Add(1)
	if c, ok := ctx.Value(queryCountKey{}).(*queryCount); ok {
		c.n.Add(1)
	}
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done(): // the statement then fails on ctx
		}
	}
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// conn runs counted statements on a *sql.DB or a *sql.Tx.
type conn struct {
	d *DB
	q querier
}

func (c conn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	c.d.count(ctx)
	return c.q.QueryContext(ctx, query, args...)
}

func (c conn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	c.d.count(ctx)
	return c.q.QueryRowContext(ctx, query, args...)
}

func (c conn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	c.d.count(ctx)
	return c.q.ExecContext(ctx, query, args...)
}

// read runs fn in a read-only transaction: its statements see one snapshot.
func (d *DB) read(ctx context.Context, fn func(c conn) error) error {
	if d.down.Load() {
		return fmt.Errorf("begin read: %w", ErrDatabaseDown)
	}
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	if err := fn(conn{d, tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit read: %w", err)
	}
	return nil
}

// write runs fn in a write transaction (BEGIN IMMEDIATE) and commits it
// when fn returns nil.
func (d *DB) write(ctx context.Context, fn func(c conn) error) error {
	if d.down.Load() {
		return fmt.Errorf("begin write: %w", ErrDatabaseDown)
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin write: %w", err)
	}
	defer tx.Rollback()
	if err := fn(conn{d, tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// direct runs statements outside a transaction (autocommit).
func (d *DB) direct() conn { return conn{d, d.sql} }
