package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tiercache/tiercache"
)

// Statements per request, without the cache.
const (
	// DetailQueries is the number of statements that load a ProductDetail:
	// the product, its category, description, images, specs, review summary,
	// latest reviews, stock and related products.
	DetailQueries = 9
	// ListingQueries is the number of statements that load a Listing.
	ListingQueries = 2
	// ListingLimit is the most products a Listing holds.
	ListingLimit = 200
	// latestReviews is the number of reviews a ProductDetail holds.
	latestReviews = 3
)

var (
	// ErrNotFound is returned for a product or category the catalog does
	// not hold. It wraps tiercache.ErrNotFound, so a loader that returns it
	// tells the cache the key is absent.
	ErrNotFound = fmt.Errorf("catalog: %w", tiercache.ErrNotFound)
	// ErrConflict is returned when a product changed between the read an
	// update is based on and its write, on every try.
	ErrConflict = errors.New("catalog: product changed during the update")
)

// loadDetail reads product id from the database: DetailQueries statements
// in one read-only transaction, so one consistent snapshot. It is the
// "product" keyspace's loader.
func (d *DB) loadDetail(ctx context.Context, id int64) (ProductDetail, error) {
	p := ProductDetail{ID: id}
	err := d.read(ctx, func(c conn) error {
		var updated int64
		err := c.queryRow(ctx, `SELECT category_id, name, price, version, updated_at FROM products WHERE id = ?`, id).
			Scan(&p.CategoryID, &p.Name, &p.Price, &p.Version, &updated)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: product %d", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("product %d: %w", id, err)
		}
		p.UpdatedAt = time.UnixMilli(updated).UTC()
		if err := c.queryRow(ctx, `SELECT name FROM categories WHERE id = ?`, p.CategoryID).Scan(&p.Category); err != nil {
			return fmt.Errorf("product %d category: %w", id, err)
		}
		if err := c.queryRow(ctx, `SELECT body FROM descriptions WHERE product_id = ?`, id).Scan(&p.Description); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("product %d description: %w", id, err)
		}
		if p.Images, err = scanAll(ctx, c, func(r *sql.Rows, v *Image) error { return r.Scan(&v.URL, &v.Alt) },
			`SELECT url, alt FROM images WHERE product_id = ? ORDER BY position`, id); err != nil {
			return fmt.Errorf("product %d images: %w", id, err)
		}
		if p.Specs, err = scanAll(ctx, c, func(r *sql.Rows, v *Spec) error { return r.Scan(&v.Name, &v.Value) },
			`SELECT name, value FROM specs WHERE product_id = ? ORDER BY name`, id); err != nil {
			return fmt.Errorf("product %d specs: %w", id, err)
		}
		if err := c.queryRow(ctx, `SELECT count, average FROM review_summaries WHERE product_id = ?`, id).
			Scan(&p.Rating.Count, &p.Rating.Average); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("product %d rating: %w", id, err)
		}
		if p.Reviews, err = scanAll(ctx, c, func(r *sql.Rows, v *Review) error { return r.Scan(&v.Author, &v.Rating, &v.Body) },
			`SELECT author, rating, body FROM reviews WHERE product_id = ? ORDER BY id DESC LIMIT ?`, id, latestReviews); err != nil {
			return fmt.Errorf("product %d reviews: %w", id, err)
		}
		if p.Stock, err = scanAll(ctx, c, func(r *sql.Rows, v *Stock) error { return r.Scan(&v.Warehouse, &v.Quantity) },
			`SELECT warehouse, quantity FROM stock WHERE product_id = ? ORDER BY warehouse`, id); err != nil {
			return fmt.Errorf("product %d stock: %w", id, err)
		}
		if p.Related, err = scanAll(ctx, c, scanSummary,
			`SELECT p.id, p.name, p.price, p.version FROM related r JOIN products p ON p.id = r.related_id
			 WHERE r.product_id = ? ORDER BY r.position`, id); err != nil {
			return fmt.Errorf("product %d related: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return ProductDetail{}, fmt.Errorf("load product: %w", err)
	}
	return p, nil
}

// loadListing reads category id and its first ListingLimit products:
// ListingQueries statements in one snapshot. It is the "category"
// keyspace's loader.
func (d *DB) loadListing(ctx context.Context, id int64) (Listing, error) {
	l := Listing{ID: id}
	err := d.read(ctx, func(c conn) error {
		err := c.queryRow(ctx, `SELECT name FROM categories WHERE id = ?`, id).Scan(&l.Name)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: category %d", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("category %d: %w", id, err)
		}
		l.Products, err = scanAll(ctx, c, scanSummary,
			`SELECT id, name, price, version FROM products WHERE category_id = ? ORDER BY id LIMIT ?`, id, ListingLimit)
		if err != nil {
			return fmt.Errorf("category %d products: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return Listing{}, fmt.Errorf("load listing: %w", err)
	}
	return l, nil
}

func scanSummary(r *sql.Rows, v *Summary) error { return r.Scan(&v.ID, &v.Name, &v.Price, &v.Version) }

// scanAll runs query and scans each row into a new T.
func scanAll[T any](ctx context.Context, c conn, scan func(*sql.Rows, *T) error, query string, args ...any) ([]T, error) {
	rows, err := c.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := scan(rows, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// writeProduct stores p's name, price, version and update time, provided
// the row is still at the version p was based on (p.Version-1): a
// compare-and-set, so that an update never overwrites one it did not see.
// It returns ErrConflict otherwise. It is the "product" keyspace's Writer.
func (d *DB) writeProduct(ctx context.Context, id int64, p ProductDetail) error {
	return d.write(ctx, func(c conn) error {
		res, err := c.exec(ctx, `UPDATE products SET name = ?, price = ?, version = ?, updated_at = ? WHERE id = ? AND version = ?`,
			p.Name, p.Price, p.Version, p.UpdatedAt.UnixMilli(), id, p.Version-1)
		if err != nil {
			return fmt.Errorf("update product %d: %w", id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("update product %d: %w", id, err)
		}
		if n == 0 {
			return fmt.Errorf("%w: product %d is no longer at version %d", ErrConflict, id, p.Version-1)
		}
		return nil
	})
}

// renameCategory renames category id and bumps the version of each of its
// products (their detail shows the category's name), in one transaction.
// It returns the ids of those products.
func (d *DB) renameCategory(ctx context.Context, id int64, name string, now time.Time) ([]int64, error) {
	var ids []int64
	err := d.write(ctx, func(c conn) error {
		res, err := c.exec(ctx, `UPDATE categories SET name = ? WHERE id = ?`, name, id)
		if err != nil {
			return fmt.Errorf("rename category %d: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("%w: category %d", ErrNotFound, id), err)
		}
		ids, err = scanAll(ctx, c, func(r *sql.Rows, v *int64) error { return r.Scan(v) },
			`UPDATE products SET version = version + 1, updated_at = ? WHERE category_id = ? RETURNING id`, now.UnixMilli(), id)
		if err != nil {
			return fmt.Errorf("bump products of category %d: %w", id, err)
		}
		return nil
	})
	return ids, err
}

// viewChunk bounds the products one statement of addViews updates.
const viewChunk = 200

// addViews adds deltas, the batch of views tiercache calls batch, to the
// products' views column: per chunk of at most viewChunk products, one
// transaction of two statements (the chunk recorded in view_batches, then
// one UPDATE of every product of the chunk), so that a flush holds SQLite's
// write lock about as long as one view's write without the cache. A chunk
// already recorded is skipped: a batch handed out again (its replica died
// after the commit, before the acknowledgement) is not counted twice.
// Without a batch id, every chunk is applied.
// It is the "views" keyspace's CounterFlusher.
func (d *DB) addViews(ctx context.Context, batch string, deltas map[int64]int64) error {
	ids := slices.Sorted(maps.Keys(deltas)) // the same chunks on every try
	for start, chunk := 0, 0; start < len(ids); start, chunk = start+viewChunk, chunk+1 {
		part := ids[start:min(start+viewChunk, len(ids))]
		applied := false
		err := d.write(ctx, func(c conn) error {
			if batch != "" {
				res, err := c.exec(ctx, `INSERT INTO view_batches (id) VALUES (?) ON CONFLICT DO NOTHING`, batch+"#"+strconv.Itoa(chunk))
				if err != nil {
					return fmt.Errorf("record view batch %s: %w", batch, err)
				}
				if n, err := res.RowsAffected(); err != nil || n == 0 {
					applied = true // counted before: skip
					return err
				}
			}
			var q strings.Builder
			args := make([]any, 0, 3*len(part))
			q.WriteString(`UPDATE products SET views = views + CASE id`)
			for _, id := range part {
				q.WriteString(` WHEN ? THEN ?`)
				args = append(args, id, deltas[id])
			}
			q.WriteString(` ELSE 0 END WHERE id IN (?` + strings.Repeat(`, ?`, len(part)-1) + `)`)
			for _, id := range part {
				args = append(args, id)
			}
			if _, err := c.exec(ctx, q.String(), args...); err != nil {
				return fmt.Errorf("add views to %d products: %w", len(part), err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !applied {
			d.viewTx.Add(1)
			d.viewRows.Add(int64(len(part)))
		}
	}
	return nil
}

// addView counts one view of product id in the database and returns its
// new count: the write of every view, without the cache.
func (d *DB) addView(ctx context.Context, id int64) (int64, error) {
	var n int64
	err := d.direct().queryRow(ctx, `UPDATE products SET views = views + 1 WHERE id = ? RETURNING views`, id).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w: product %d", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("add view to product %d: %w", id, err)
	}
	d.viewTx.Add(1)
	d.viewRows.Add(1)
	return n, nil
}

// TotalViews returns the sum of the views column: every view the database
// has been told of.
func (d *DB) TotalViews(ctx context.Context) (int64, error) {
	var n int64
	if err := d.direct().queryRow(ctx, `SELECT COALESCE(SUM(views), 0) FROM products`).Scan(&n); err != nil {
		return 0, fmt.Errorf("catalog: total views: %w", err)
	}
	return n, nil
}

// Version returns product id's version in the database.
func (d *DB) Version(ctx context.Context, id int64) (int64, error) {
	var v int64
	err := d.direct().queryRow(ctx, `SELECT version FROM products WHERE id = ?`, id).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w: product %d", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("catalog: version of product %d: %w", id, err)
	}
	return v, nil
}
