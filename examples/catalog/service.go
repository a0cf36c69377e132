package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tiercache/tiercache"
)

// maxUpdateTries bounds the tries of UpdateProduct when the product changes
// under it (ErrConflict).
const maxUpdateTries = 5

// maxNameLength bounds product and category names, in bytes.
const maxNameLength = 200

// Keyspaces are the catalog's keyspaces on one Cache.
type Keyspaces struct {
	// Products holds product pages (KeyspaceProduct).
	Products *tiercache.Keyspace[int64, ProductDetail]
	// Listings holds category pages (KeyspaceCategory).
	Listings *tiercache.Keyspace[int64, Listing]
	// Views counts product views (KeyspaceViews); it holds no values.
	Views *tiercache.Keyspace[int64, int64]
}

// ProductOptions are the options of the product keyspace: each page is
// tagged with its category, so that a category change finds them all, and
// Write writes the product's row to db first (write-through).
func ProductOptions(db *DB) []tiercache.KeyspaceOption[int64, ProductDetail] {
	return []tiercache.KeyspaceOption[int64, ProductDetail]{
		tiercache.WithTags(func(_ int64, p ProductDetail) []string { return []string{catTag(p.CategoryID)} }),
		tiercache.WithWriter(db.writeProduct),
	}
}

// ListingOptions are the options of the category keyspace: each listing
// is tagged with its category.
func ListingOptions() []tiercache.KeyspaceOption[int64, Listing] {
	return []tiercache.KeyspaceOption[int64, Listing]{
		tiercache.WithTags(func(id int64, _ Listing) []string { return []string{catTag(id)} }),
	}
}

// ViewOptions are the options of the views keyspace: its counts are added
// to the views column of db, every Counter.Every views of a product or
// every Counter.Interval, and on Stop; onFlushed, if not nil, is called
// after each flush that reached the database.
//
// The flush records the batch's id (tiercache.CounterBatchID) in the same
// transactions as its counts, so a batch handed out again, after a replica
// died between the commit and the acknowledgement, is not counted twice.
func ViewOptions(db *DB, onFlushed func(deltas map[int64]int64)) []tiercache.KeyspaceOption[int64, int64] {
	flush := func(ctx context.Context, deltas map[int64]int64) error {
		if err := db.addViews(ctx, tiercache.CounterBatchID(ctx), deltas); err != nil {
			return err
		}
		if onFlushed != nil {
			onFlushed(deltas)
		}
		return nil
	}
	return []tiercache.KeyspaceOption[int64, int64]{tiercache.WithCounter[int64, int64](flush)}
}

// NewKeyspaces registers the catalog's keyspaces on c, configured from
// c.Config().Keyspaces, for use without fx (Module does the same). hooks
// may be zero.
func NewKeyspaces(c *tiercache.Cache, db *DB, hooks Hooks) (Keyspaces, error) {
	cfg := c.Config().Keyspaces
	var ks Keyspaces
	var err error
	if ks.Products, err = tiercache.NewKeyspace(c, KeyspaceProduct, cfg[KeyspaceProduct], ProductOptions(db)...); err != nil {
		return ks, fmt.Errorf("catalog: %w", err)
	}
	if ks.Listings, err = tiercache.NewKeyspace(c, KeyspaceCategory, cfg[KeyspaceCategory], ListingOptions()...); err != nil {
		return ks, fmt.Errorf("catalog: %w", err)
	}
	if ks.Views, err = tiercache.NewKeyspace(c, KeyspaceViews, cfg[KeyspaceViews], ViewOptions(db, hooks.OnViewsFlushed)...); err != nil {
		return ks, fmt.Errorf("catalog: %w", err)
	}
	return ks, nil
}

// Hooks are optional callbacks of a Service, for measurements and tests.
// They run on the request's goroutine (or the flusher's) and must return
// quickly.
type Hooks struct {
	// OnUpdate is called when UpdateProduct has written the product to the
	// database and the cache, with its new version and the time the cache
	// write returned, before the listing is invalidated and the caller
	// answered.
	OnUpdate func(id, version int64, at time.Time)
	// OnViewsFlushed is called after view counts were added to the
	// database (with the cache: each counter flush; without: each view).
	OnViewsFlushed func(deltas map[int64]int64)
}

// Service is the catalog: reads through the cache (or straight from the
// database with the cache off), updates that keep every replica fresh, and
// view counting. Its HTTP face is Handler.
type Service struct {
	db    *DB
	cache *tiercache.Cache // nil: cache off
	ks    Keyspaces        // zero: cache off
	hooks Hooks
	log   *slog.Logger

	views      atomic.Int64 // views counted
	conflicts  atomic.Int64 // update tries that lost to another write
	viewErrors atomic.Int64 // views not counted (Redis failing)
}

// NewService returns the catalog over db. With a nil cache (ks then zero)
// every request goes to the database. hooks.OnViewsFlushed is called here
// only with the cache off: with the cache, pass it to ViewOptions
// (NewKeyspaces does). log may be nil.
func NewService(db *DB, cache *tiercache.Cache, ks Keyspaces, hooks Hooks, log *slog.Logger) (*Service, error) {
	if db == nil {
		return nil, errors.New("catalog: nil database")
	}
	if cache != nil && (ks.Products == nil || ks.Listings == nil || ks.Views == nil) {
		return nil, errors.New("catalog: a cache needs its three keyspaces")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, cache: cache, ks: ks, hooks: hooks, log: log}, nil
}

// Cached reports whether the service reads through the cache.
func (s *Service) Cached() bool { return s.cache != nil }

// Cache returns the service's Cache, nil with the cache off.
func (s *Service) Cache() *tiercache.Cache { return s.cache }

// DB returns the service's database.
func (s *Service) DB() *DB { return s.db }

// Product returns product id's page: from L1, Redis, or the database
// (DetailQueries statements) when in neither or with the cache off.
func (s *Service) Product(ctx context.Context, id int64) (ProductDetail, error) {
	if s.cache == nil {
		return s.db.loadDetail(ctx, id)
	}
	return s.ks.Products.GetOrLoad(ctx, id, s.db.loadDetail)
}

// Category returns category id's listing, through the cache as Product
// does.
func (s *Service) Category(ctx context.Context, id int64) (Listing, error) {
	if s.cache == nil {
		return s.db.loadListing(ctx, id)
	}
	return s.ks.Listings.GetOrLoad(ctx, id, s.db.loadListing)
}

// View counts one view of product id and returns its count so far. With
// the cache, the count is in Redis at once and reaches the database every
// Counter.Every views or Counter.Interval; without, each view is a
// database write.
func (s *Service) View(ctx context.Context, id int64) (int64, error) {
	if s.cache == nil {
		n, err := s.db.addView(ctx, id)
		if err != nil {
			s.viewErrors.Add(1)
			return 0, fmt.Errorf("catalog: count view of product %d: %w", id, err)
		}
		s.views.Add(1)
		if s.hooks.OnViewsFlushed != nil {
			s.hooks.OnViewsFlushed(map[int64]int64{id: 1})
		}
		return n, nil
	}
	n, err := s.ks.Views.Incr(ctx, id, 1)
	if err != nil {
		s.viewErrors.Add(1)
		return 0, fmt.Errorf("catalog: count view of product %d: %w", id, err)
	}
	s.views.Add(1)
	return n, nil
}

// UpdateProduct sets product id's name and price, bumping its version, and
// returns its new page.
//
// The update is written with a compare-and-set on the version (ErrConflict
// after maxUpdateTries lost races). With the cache, its first try starts
// from the cached page (read as Product does, usually from L1, without a
// database query): a stale copy fails the compare-and-set, and every later
// try reads the database's current row. With the cache it goes through the
// product keyspace's Write: the database first, then Redis with the
// invalidation of every replica's L1, in one step; writes of one product
// that overlap on several replicas delete it from the cache instead. Then
// the category's listing is invalidated by its tag.
func (s *Service) UpdateProduct(ctx context.Context, id int64, u ProductUpdate) (ProductDetail, error) {
	if err := validName(u.Name); err != nil {
		return ProductDetail{}, err
	}
	if !(u.Price >= 0 && u.Price < 1e9) {
		return ProductDetail{}, fmt.Errorf("%w: price %v is not in [0, 1e9)", errInvalid, u.Price)
	}
	for try := range maxUpdateTries {
		var (
			cur ProductDetail
			err error
		)
		if try == 0 && s.cache != nil {
			cur, err = s.ks.Products.GetOrLoad(ctx, id, s.db.loadDetail)
		} else {
			cur, err = s.db.loadDetail(ctx, id)
		}
		if err != nil {
			return ProductDetail{}, fmt.Errorf("catalog: update: %w", err)
		}
		next := cur
		next.Name, next.Price, next.Version, next.UpdatedAt = u.Name, u.Price, cur.Version+1, time.Now().UTC().Truncate(time.Millisecond)
		if s.cache == nil {
			err = s.db.writeProduct(ctx, id, next)
		} else {
			err = s.ks.Products.Write(ctx, id, next)
		}
		switch {
		case errors.Is(err, ErrConflict):
			s.conflicts.Add(1)
			continue
		case errors.Is(err, tiercache.ErrCacheNotUpdated):
			// The database has the update; the cache deleted the key
			// rather than keep the old value. Nothing for the caller.
			s.log.Warn("catalog: product written, cache entry deleted instead of updated", "product", id, "err", err)
		case err != nil:
			return ProductDetail{}, fmt.Errorf("catalog: update product %d: %w", id, err)
		}
		if s.hooks.OnUpdate != nil {
			s.hooks.OnUpdate(id, next.Version, time.Now())
		}
		if s.cache != nil {
			s.invalidateListing(ctx, cur.CategoryID)
		}
		return next, nil
	}
	return ProductDetail{}, fmt.Errorf("%w: product %d, %d tries", ErrConflict, id, maxUpdateTries)
}

// invalidateListing evicts category id's listing on every replica, after
// one of its products changed.
//
// InvalidateTags deletes every value stored with the tag, and voids the
// loads in flight of values carrying it: a listing read from the database
// before the update is not stored after it. A failure leaves other
// replicas' copies until their L1 TTL: the product update itself
// succeeded, so it is logged.
func (s *Service) invalidateListing(ctx context.Context, id int64) {
	err := s.ks.Listings.InvalidateTags(ctx, catTag(id))
	if err != nil {
		s.log.Warn("catalog: category listing not invalidated", "category", id, "err", err)
	}
}

// RenameCategory renames category id. Its products show the name, so each
// gets a new version, and every product page of the category is
// invalidated by the category's tag, and its listing with them.
func (s *Service) RenameCategory(ctx context.Context, id int64, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if _, err := s.db.renameCategory(ctx, id, name, time.Now()); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	if s.cache == nil {
		return nil
	}
	// The tag evicts every page stored and voids the loads in flight, as
	// in invalidateListing.
	err := s.ks.Products.InvalidateTags(ctx, catTag(id))
	s.invalidateListing(ctx, id)
	if err != nil {
		return fmt.Errorf("catalog: category %d renamed; product pages not invalidated: %w", id, err)
	}
	return nil
}

// ServiceStats are a replica's counters: its cache's, its database's and
// its own.
type ServiceStats struct {
	// Cached says whether the service reads through the cache.
	Cached bool `json:"cached"`
	// Cache is tiercache's snapshot; nil with the cache off.
	Cache *tiercache.Stats `json:"cache,omitempty"`
	// DBQueries counts the statements this replica sent to the database.
	DBQueries int64 `json:"db_queries"`
	// Views counts the views this replica counted (in Redis with the
	// cache, in the database without).
	Views int64 `json:"views"`
	// ViewWrites and ViewRows count the database writes of view counts
	// and the product rows they updated.
	ViewWrites int64 `json:"view_writes"`
	ViewRows   int64 `json:"view_rows"`
	// UpdateConflicts counts update tries that lost a race and were tried
	// again.
	UpdateConflicts int64 `json:"update_conflicts"`
	// ViewErrors counts views that could not be counted.
	ViewErrors int64 `json:"view_errors"`
}

// Stats returns the replica's counters.
func (s *Service) Stats() ServiceStats {
	st := ServiceStats{
		Cached:          s.cache != nil,
		DBQueries:       s.db.Queries(),
		Views:           s.views.Load(),
		UpdateConflicts: s.conflicts.Load(),
		ViewErrors:      s.viewErrors.Load(),
	}
	st.ViewWrites, st.ViewRows = s.db.ViewWrites()
	if s.cache != nil {
		cs := s.cache.Stats()
		st.Cache = &cs
	}
	return st
}

// errInvalid marks a request the service refuses (HTTP 400).
var errInvalid = errors.New("catalog: invalid request")

func validName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("%w: empty name", errInvalid)
	case len(name) > maxNameLength:
		return fmt.Errorf("%w: name of %d bytes, more than %d", errInvalid, len(name), maxNameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name is not valid UTF-8", errInvalid)
	}
	return nil
}
