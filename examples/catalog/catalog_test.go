package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/goleak"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait of a test.
const testTimeout = 20 * time.Second

// testCatalog seeds a catalog of products in categories in t.TempDir and
// returns the file's path.
func testCatalog(t *testing.T, products, categories int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	if err := seedFile(path, products, categories); err != nil {
		t.Fatal(err)
	}
	return path
}

// testReplica is a started replica and what its hooks saw.
type testReplica struct {
	*Replica
	id      string
	inv     chan tiercache.Invalidation // applied invalidations
	flushed chan map[int64]int64        // view counts written to the database
	stopped bool
}

// startTestReplica starts a replica called id on the catalog at dbPath,
// with the Redis at srv (nil for the cache off), and stops it in
// t.Cleanup. edit, if not nil, changes its Config first.
func startTestReplica(t *testing.T, srv *redistest.Server, dbPath, id string, edit func(*Config)) *testReplica {
	t.Helper()
	r := &testReplica{
		id:      id,
		inv:     make(chan tiercache.Invalidation, 1024),
		flushed: make(chan map[int64]int64, 1024),
	}
	cfg := Config{Database: dbPath, CacheOff: srv == nil}
	if srv != nil {
		cfg.Cache = tiercache.Config{Namespace: "test", InstanceID: id, Redis: tiercache.RedisConfig{Addrs: []string{srv.Addr}}}
	}
	if edit != nil {
		edit(&cfg)
	}
	hooks := Hooks{OnViewsFlushed: func(d map[int64]int64) {
		select {
		case r.flushed <- d:
		default:
			t.Errorf("%s: flush channel full", id)
		}
	}}
	opts := []fx.Option{fx.Supply(hooks)}
	if srv != nil {
		opts = append(opts, WithInvalidationHook(func(i tiercache.Invalidation) {
			select {
			case r.inv <- i:
			default: // never block the bus's dispatcher
				t.Errorf("%s: invalidation channel full", id)
			}
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	rep, err := StartReplica(ctx, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r.Replica = rep
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *testReplica) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Errorf("%s: %v", r.id, err)
	}
}

// waitEvicted waits until r applied invalidations of every key of keys in
// keyspace published by origin.
func (r *testReplica) waitEvicted(t *testing.T, keyspace, origin string, keys ...string) {
	t.Helper()
	left := make(map[string]bool, len(keys))
	for _, k := range keys {
		left[k] = true
	}
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	for len(left) > 0 {
		select {
		case i := <-r.inv:
			if i.Keyspace != keyspace || i.Origin != origin {
				continue
			}
			for _, k := range i.Keys {
				delete(left, k)
			}
		case <-timer.C:
			t.Fatalf("%s: no invalidation of %s %v from %s", r.id, keyspace, left, origin)
		}
	}
}

// call sends a request to r and decodes a 200's JSON into out (if not
// nil). It returns the status and the request's DB statements (-1 for an
// answer of the router itself, which carries no count).
func (r *testReplica) call(t *testing.T, method, path string, body, out any) (status int, queries int64) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	h := resp.Header.Get(HeaderDBQueries)
	if h == "" {
		h = "-1"
	}
	queries, err = strconv.ParseInt(h, 10, 64)
	if err != nil {
		t.Fatalf("%s %s: header %s: %v", method, path, HeaderDBQueries, err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode, queries
}

// product reads product id on r and returns its page and the statements
// the read ran.
func (r *testReplica) product(t *testing.T, id int64) (ProductView, int64) {
	t.Helper()
	var p ProductView
	status, q := r.call(t, http.MethodGet, fmt.Sprintf("/products/%d", id), nil, &p)
	if status != http.StatusOK {
		t.Fatalf("%s: GET /products/%d: status %d", r.id, id, status)
	}
	return p, q
}

func (r *testReplica) listing(t *testing.T, id int64) (Listing, int64) {
	t.Helper()
	var l Listing
	status, q := r.call(t, http.MethodGet, fmt.Sprintf("/categories/%d", id), nil, &l)
	if status != http.StatusOK {
		t.Fatalf("%s: GET /categories/%d: status %d", r.id, id, status)
	}
	return l, q
}

func (r *testReplica) update(t *testing.T, id int64, u ProductUpdate) ProductDetail {
	t.Helper()
	var p ProductDetail
	if status, _ := r.call(t, http.MethodPut, fmt.Sprintf("/products/%d", id), u, &p); status != http.StatusOK {
		t.Fatalf("%s: PUT /products/%d: status %d", r.id, id, status)
	}
	return p
}

// dbViews reads the views column of the catalog at path.
func dbViews(t *testing.T, path string) int64 {
	t.Helper()
	n, err := totalViews(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQueriesPerRequest: with the cache, a product page or a listing costs
// its statements once and 0 on every hit after; with the cache off, every
// request queries the database (a page: its statements and the view's
// write).
func TestQueriesPerRequest(t *testing.T) {
	srv := redistest.Start(t)
	tests := []struct {
		name        string
		cacheOff    bool
		wantProduct []int64 // statements of successive reads of one product
		wantListing []int64 // and of one category
	}{
		{"cache on", false, []int64{DetailQueries, 0, 0, 0}, []int64{ListingQueries, 0, 0, 0}},
		{"cache off", true, []int64{DetailQueries + 1, DetailQueries + 1, DetailQueries + 1, DetailQueries + 1}, []int64{ListingQueries, ListingQueries, ListingQueries, ListingQueries}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := testCatalog(t, 20, 4)
			s := srv
			if tt.cacheOff {
				s = nil
			}
			r := startTestReplica(t, s, db, "a", nil)
			for i, want := range tt.wantProduct {
				p, got := r.product(t, 3)
				if got != want {
					t.Errorf("read %d of product 3: %d DB queries; want %d", i+1, got, want)
				}
				if p.ID != 3 || p.Version != 1 || len(p.Images) != seedImages || len(p.Related) != seedRelated {
					t.Errorf("read %d of product 3 = %+v; want id 3, version 1, %d images, %d related", i+1, p, seedImages, seedRelated)
				}
				if p.Views != int64(i+1) {
					t.Errorf("read %d of product 3: %d views; want %d", i+1, p.Views, i+1)
				}
			}
			for i, want := range tt.wantListing {
				l, got := r.listing(t, 2)
				if got != want {
					t.Errorf("read %d of category 2: %d DB queries; want %d", i+1, got, want)
				}
				if len(l.Products) != 5 {
					t.Errorf("read %d of category 2: %d products; want 5", i+1, len(l.Products))
				}
			}
		})
	}
}

// TestUpdateNeverStaleOnOtherReplica: once B has applied the invalidation
// of A's update, B serves the new version, from Redis (no DB query).
func TestUpdateNeverStaleOnOtherReplica(t *testing.T) {
	srv := redistest.Start(t)
	db := testCatalog(t, 20, 4)
	a := startTestReplica(t, srv, db, "a", nil)
	b := startTestReplica(t, srv, db, "b", nil)
	const id = 5
	for round := range 10 {
		// B holds the current version in L1.
		before, _ := b.product(t, id)
		b.Service().ks.Products.Wait()
		if _, q := b.product(t, id); q != 0 {
			t.Fatalf("round %d: B read its cached page with %d DB queries", round, q)
		}
		want := a.update(t, id, ProductUpdate{Name: fmt.Sprintf("lamp %d", round), Price: float64(round)})
		if want.Version != before.Version+1 {
			t.Fatalf("round %d: update made version %d; want %d", round, want.Version, before.Version+1)
		}
		b.waitEvicted(t, KeyspaceProduct, "a", strconv.Itoa(id))
		got, q := b.product(t, id)
		if got.Version != want.Version || got.Name != want.Name {
			t.Fatalf("round %d: B serves version %d %q after the eviction; want %d %q", round, got.Version, got.Name, want.Version, want.Name)
		}
		if q != 0 {
			t.Errorf("round %d: B read the written page with %d DB queries; want 0 (Redis)", round, q)
		}
	}
	v, err := a.Service().DB().Version(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if v != 11 {
		t.Errorf("database version = %d; want 11", v)
	}
}

// TestListingInvalidatedByTag: an update on A of a product of category c
// evicts B's listing of c through the tag, and B reloads it.
func TestListingInvalidatedByTag(t *testing.T) {
	srv := redistest.Start(t)
	db := testCatalog(t, 20, 4)
	a := startTestReplica(t, srv, db, "a", nil)
	b := startTestReplica(t, srv, db, "b", nil)
	const cat, id = 3, 7 // product 7 is in category (7-1)%4+1 = 3
	b.listing(t, cat)
	b.Service().ks.Listings.Wait()
	if _, q := b.listing(t, cat); q != 0 {
		t.Fatalf("cached listing read with %d DB queries", q)
	}
	a.update(t, id, ProductUpdate{Name: "renamed", Price: 1})
	b.waitEvicted(t, KeyspaceCategory, "a", strconv.Itoa(cat))
	l, q := b.listing(t, cat)
	if q != ListingQueries {
		t.Errorf("listing after the update read with %d DB queries; want %d (reloaded)", q, ListingQueries)
	}
	var found bool
	for _, p := range l.Products {
		if p.ID == id {
			found = p.Name == "renamed" && p.Version == 2
		}
	}
	if !found {
		t.Errorf("listing after the update = %+v; want product %d renamed at version 2", l.Products, id)
	}
	if got := a.Service().Stats().Cache.Keyspaces[KeyspaceCategory].TagDeletes; got != 1 {
		t.Errorf("A's category keyspace: %d tag deletes; want 1", got)
	}
}

// TestCategoryRenameInvalidatesProducts: renaming a category on A evicts,
// on B, every cached page of its products.
func TestCategoryRenameInvalidatesProducts(t *testing.T) {
	srv := redistest.Start(t)
	db := testCatalog(t, 20, 4)
	a := startTestReplica(t, srv, db, "a", nil)
	b := startTestReplica(t, srv, db, "b", nil)
	const cat = 2
	ids := []int64{2, 6, 10, 14, 18} // category 2
	for _, id := range ids {
		b.product(t, id)
	}
	b.product(t, 1) // another category: stays cached
	b.Service().ks.Products.Wait()
	if status, _ := a.call(t, http.MethodPut, fmt.Sprintf("/categories/%d", cat), CategoryUpdate{Name: "lamps"}, nil); status != http.StatusOK {
		t.Fatalf("PUT /categories/%d: status %d", cat, status)
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = strconv.FormatInt(id, 10)
	}
	b.waitEvicted(t, KeyspaceProduct, "a", keys...)
	for _, id := range ids {
		p, _ := b.product(t, id)
		if p.Category != "lamps" || p.Version != 2 {
			t.Errorf("product %d after the rename: category %q, version %d; want \"lamps\", 2", id, p.Category, p.Version)
		}
	}
	if _, q := b.product(t, 1); q != 0 {
		t.Errorf("product 1 of another category read with %d DB queries; want 0", q)
	}
	if got := a.Service().Stats().Cache.Keyspaces[KeyspaceProduct].TagDeletes; got != uint64(len(ids)) {
		t.Errorf("A's product keyspace: %d tag deletes; want %d", got, len(ids))
	}
}

// TestViewCounter: with the cache, views reach the database every N views
// (counter.every) and the rest on Stop, none lost; without, every view is
// a write.
func TestViewCounter(t *testing.T) {
	srv := redistest.Start(t)
	tests := []struct {
		name       string
		cacheOff   bool
		views      int
		every      int64
		wantFirst  int64 // views in the first write
		wantWrites int64 // at most, Stop's included
	}{
		{"cache on, every 10", false, 25, 10, 10, 3},
		{"cache on, every 50", false, 120, 50, 50, 3},
		{"cache off", true, 25, 10, 1, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := testCatalog(t, 20, 4)
			s := srv
			if tt.cacheOff {
				s = nil
			}
			r := startTestReplica(t, s, db, "a", func(c *Config) {
				c.Cache.Namespace = fmt.Sprintf("views%d", tt.every)
				c.Cache.Keyspaces = map[string]tiercache.KeyspaceConfig{
					KeyspaceViews: {Counter: tiercache.CounterConfig{Every: tt.every, Interval: time.Hour}},
				}
			})
			for range tt.wantFirst {
				r.product(t, 4)
			}
			// The wantFirst-th view wakes the flusher: wait for its write.
			select {
			case d := <-r.flushed:
				if d[4] != tt.wantFirst {
					t.Errorf("first write = %v; want {4: %d}", d, tt.wantFirst)
				}
			case <-time.After(testTimeout):
				t.Fatalf("no write of views after %d views", tt.wantFirst)
			}
			for range int64(tt.views) - tt.wantFirst {
				r.product(t, 4)
			}
			r.stop(t) // flushes what is pending
			writes, _ := r.Service().DB().ViewWrites()
			if writes > tt.wantWrites || writes < 1 {
				t.Errorf("%d views made %d DB writes; want 1 to %d", tt.views, writes, tt.wantWrites)
			}
			if got := dbViews(t, db); got != int64(tt.views) {
				t.Errorf("views in the database after stop = %d; want %d", got, tt.views)
			}
		})
	}
}

// TestHealthzAndStats: the operational endpoints answer, and /stats
// carries the cache's counters.
func TestHealthzAndStats(t *testing.T) {
	srv := redistest.Start(t)
	db := testCatalog(t, 20, 4)
	r := startTestReplica(t, srv, db, "a", nil)
	r.product(t, 1)
	if status, _ := r.call(t, http.MethodGet, "/healthz", nil, nil); status != http.StatusOK {
		t.Errorf("GET /healthz: status %d", status)
	}
	var st ServiceStats
	if status, _ := r.call(t, http.MethodGet, "/stats", nil, &st); status != http.StatusOK {
		t.Fatalf("GET /stats: status %d", status)
	}
	if st.Cache == nil || st.Cache.InstanceID != "a" || st.Cache.Keyspaces[KeyspaceProduct].Loads != 1 || st.Views != 1 || st.DBQueries != DetailQueries {
		t.Errorf("GET /stats = %+v; want instance a, 1 product load, 1 view, %d DB queries", st, DetailQueries)
	}
}

// TestBadRequests: the API refuses what it cannot serve, with the status
// that says why.
func TestBadRequests(t *testing.T) {
	srv := redistest.Start(t)
	db := testCatalog(t, 20, 4)
	r := startTestReplica(t, srv, db, "a", nil)
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		want   int
	}{
		{"missing product", http.MethodGet, "/products/999", nil, http.StatusNotFound},
		{"missing category", http.MethodGet, "/categories/999", nil, http.StatusNotFound},
		{"id not a number", http.MethodGet, "/products/x", nil, http.StatusBadRequest},
		{"id zero", http.MethodGet, "/products/0", nil, http.StatusBadRequest},
		{"update of a missing product", http.MethodPut, "/products/999", ProductUpdate{Name: "n", Price: 1}, http.StatusNotFound},
		{"empty name", http.MethodPut, "/products/1", ProductUpdate{Name: " ", Price: 1}, http.StatusBadRequest},
		{"negative price", http.MethodPut, "/products/1", ProductUpdate{Name: "n", Price: -1}, http.StatusBadRequest},
		{"unknown field", http.MethodPut, "/products/1", map[string]any{"name": "n", "colour": "red"}, http.StatusBadRequest},
		{"rename of a missing category", http.MethodPut, "/categories/999", CategoryUpdate{Name: "n"}, http.StatusNotFound},
		{"wrong method", http.MethodDelete, "/products/1", nil, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _ := r.call(t, tt.method, tt.path, tt.body, nil)
			if status != tt.want {
				t.Errorf("%s %s: status %d; want %d", tt.method, tt.path, status, tt.want)
			}
		})
	}
}

// TestConfigErrors: a replica that cannot be built or started says why
// and leaves nothing running (goleak checks at the end).
func TestConfigErrors(t *testing.T) {
	srv := redistest.Start(t)
	db := testCatalog(t, 20, 4)
	tests := []struct {
		name string
		give Config
	}{
		{"no database", Config{CacheOff: true}},
		{"no redis", Config{Database: db}},
		{"bad keyspace", Config{Database: db, Cache: tiercache.Config{
			Redis:     tiercache.RedisConfig{Addrs: []string{srv.Addr}},
			Keyspaces: map[string]tiercache.KeyspaceConfig{KeyspaceProduct: {TTL: -time.Second}},
		}}},
		{"address taken", Config{Database: db, CacheOff: true, Addr: "127.0.0.1:" + strconv.Itoa(srv.Port)}},
		{"database is a directory", Config{Database: t.TempDir(), CacheOff: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			r, err := StartReplica(ctx, tt.give)
			if err == nil {
				r.Stop(ctx)
				t.Fatalf("StartReplica(%+v) succeeded; want an error", tt.give)
			}
		})
	}
}

// TestWithoutFx: the service runs on a Cache, keyspaces and server built
// by hand, as Module builds them.
func TestWithoutFx(t *testing.T) {
	srv := redistest.Start(t)
	path := testCatalog(t, 20, 4)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	client := srv.Client(t)
	cache, err := tiercache.New(client, tiercache.Config{Namespace: "nofx", Keyspaces: DefaultKeyspaces()})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := NewKeyspaces(cache, db, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cache.Stop(ctx) // before db.Close: flushes the views into it
	svc, err := NewService(db, cache, ks, Hooks{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	server := NewServer(DefaultAddr, svc.Handler())
	if err := server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := server.Stop(ctx); err != nil {
			t.Error(err)
		}
	}()
	r := &testReplica{Replica: &Replica{service: svc, server: server}, id: "nofx"}
	if _, q := r.product(t, 2); q != DetailQueries {
		t.Errorf("first read: %d DB queries; want %d", q, DetailQueries)
	}
	if _, q := r.product(t, 2); q != 0 {
		t.Errorf("second read: %d DB queries; want 0", q)
	}
	if p := r.update(t, 2, ProductUpdate{Name: "desk", Price: 3}); p.Version != 2 {
		t.Errorf("update made version %d; want 2", p.Version)
	}
	if p, _ := r.product(t, 2); p.Name != "desk" || p.Version != 2 {
		t.Errorf("read after the update = %q version %d; want \"desk\" version 2", p.Name, p.Version)
	}
}
