package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// schema is the catalog: products and their categories, and the details of
// a product spread over seven more tables, as in a real shop, so that the
// product page costs DetailQueries statements when it is not cached.
const schema = `
DROP TABLE IF EXISTS view_batches;
DROP TABLE IF EXISTS related;
DROP TABLE IF EXISTS stock;
DROP TABLE IF EXISTS reviews;
DROP TABLE IF EXISTS review_summaries;
DROP TABLE IF EXISTS specs;
DROP TABLE IF EXISTS images;
DROP TABLE IF EXISTS descriptions;
DROP TABLE IF EXISTS products;
DROP TABLE IF EXISTS categories;
CREATE TABLE view_batches ( -- view counts applied, by tiercache's batch id
	id TEXT PRIMARY KEY
);
CREATE TABLE categories (
	id   INTEGER PRIMARY KEY,
	name TEXT NOT NULL
);
CREATE TABLE products (
	id          INTEGER PRIMARY KEY,
	category_id INTEGER NOT NULL REFERENCES categories(id),
	name        TEXT NOT NULL,
	price       REAL NOT NULL,
	version     INTEGER NOT NULL DEFAULT 1,
	updated_at  INTEGER NOT NULL, -- unix milliseconds
	views       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX products_by_category ON products(category_id, id);
CREATE TABLE descriptions (
	product_id INTEGER PRIMARY KEY REFERENCES products(id),
	body       TEXT NOT NULL
);
CREATE TABLE images (
	product_id INTEGER NOT NULL REFERENCES products(id),
	position   INTEGER NOT NULL,
	url        TEXT NOT NULL,
	alt        TEXT NOT NULL,
	PRIMARY KEY (product_id, position)
);
CREATE TABLE specs (
	product_id INTEGER NOT NULL REFERENCES products(id),
	name       TEXT NOT NULL,
	value      TEXT NOT NULL,
	PRIMARY KEY (product_id, name)
);
CREATE TABLE review_summaries (
	product_id INTEGER PRIMARY KEY REFERENCES products(id),
	count      INTEGER NOT NULL,
	average    REAL NOT NULL
);
CREATE TABLE reviews (
	id         INTEGER PRIMARY KEY,
	product_id INTEGER NOT NULL REFERENCES products(id),
	author     TEXT NOT NULL,
	rating     INTEGER NOT NULL,
	body       TEXT NOT NULL
);
CREATE INDEX reviews_by_product ON reviews(product_id, id);
CREATE TABLE stock (
	product_id INTEGER NOT NULL REFERENCES products(id),
	warehouse  TEXT NOT NULL,
	quantity   INTEGER NOT NULL,
	PRIMARY KEY (product_id, warehouse)
);
CREATE TABLE related (
	product_id INTEGER NOT NULL REFERENCES products(id),
	position   INTEGER NOT NULL,
	related_id INTEGER NOT NULL REFERENCES products(id),
	PRIMARY KEY (product_id, position)
);
`

// Seed shapes, per product.
const (
	seedImages  = 3
	seedSpecs   = 4
	seedReviews = 3
	seedRelated = 4
	seedRandom  = 8 // the seed of the pseudo-random catalog: the same on every run
)

var seedWarehouses = []string{"berlin", "lyon", "porto"}

// Seed replaces the catalog in db with nProducts products (ids 1 to
// nProducts) spread over nCategories categories (ids 1 to nCategories),
// product i in category (i-1)%nCategories+1, each with its description,
// images, specs, reviews, stock and related products. Every product starts
// at version 1 with 0 views. The catalog is the same on every call.
func Seed(db *sql.DB, nProducts, nCategories int) error {
	if nProducts < 1 || nCategories < 1 || nCategories > nProducts {
		return fmt.Errorf("catalog: seed %d products in %d categories: want 1 <= categories <= products", nProducts, nCategories)
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("catalog: create schema: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("catalog: seed: %w", err)
	}
	defer tx.Rollback()
	if err := seed(ctx, tx, nProducts, nCategories); err != nil {
		return fmt.Errorf("catalog: seed: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("catalog: seed: commit: %w", err)
	}
	return nil
}

func seed(ctx context.Context, tx *sql.Tx, nProducts, nCategories int) error {
	rng := rand.New(rand.NewPCG(seedRandom, uint64(nProducts)))
	now := time.Now().UnixMilli()
	stmts := map[string]string{
		"category":    `INSERT INTO categories (id, name) VALUES (?, ?)`,
		"product":     `INSERT INTO products (id, category_id, name, price, version, updated_at) VALUES (?, ?, ?, ?, 1, ?)`,
		"description": `INSERT INTO descriptions (product_id, body) VALUES (?, ?)`,
		"image":       `INSERT INTO images (product_id, position, url, alt) VALUES (?, ?, ?, ?)`,
		"spec":        `INSERT INTO specs (product_id, name, value) VALUES (?, ?, ?)`,
		"summary":     `INSERT INTO review_summaries (product_id, count, average) VALUES (?, ?, ?)`,
		"review":      `INSERT INTO reviews (product_id, author, rating, body) VALUES (?, ?, ?, ?)`,
		"stock":       `INSERT INTO stock (product_id, warehouse, quantity) VALUES (?, ?, ?)`,
		"related":     `INSERT INTO related (product_id, position, related_id) VALUES (?, ?, ?)`,
	}
	prepared := make(map[string]*sql.Stmt, len(stmts))
	for name, q := range stmts {
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", name, err)
		}
		defer st.Close()
		prepared[name] = st
	}
	var errs []error
	ins := func(name string, args ...any) {
		if _, err := prepared[name].ExecContext(ctx, args...); err != nil {
			errs = append(errs, fmt.Errorf("insert %s: %w", name, err))
		}
	}
	for c := 1; c <= nCategories; c++ {
		ins("category", c, fmt.Sprintf("category %d", c))
	}
	for p := 1; p <= nProducts; p++ {
		cat := (p-1)%nCategories + 1
		ins("product", p, cat, fmt.Sprintf("product %d", p), float64(rng.IntN(20000))/100+0.99, now)
		ins("description", p, fmt.Sprintf("Product %d is a fine thing from category %d. It does what it says.", p, cat))
		for i := range seedImages {
			ins("image", p, i, fmt.Sprintf("https://img.example/p/%d/%d.jpg", p, i), fmt.Sprintf("product %d, view %d", p, i+1))
		}
		for i := range seedSpecs {
			ins("spec", p, fmt.Sprintf("spec-%d", i), fmt.Sprintf("%d units", rng.IntN(100)))
		}
		ins("summary", p, 10+rng.IntN(500), 1+4*rng.Float64())
		for i := range seedReviews {
			ins("review", p, fmt.Sprintf("customer %d", rng.IntN(10000)), 1+rng.IntN(5), fmt.Sprintf("Review %d of product %d.", i+1, p))
		}
		for _, w := range seedWarehouses {
			ins("stock", p, w, rng.IntN(1000))
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	// Related products last: they refer to products inserted after them.
	for p := 1; p <= nProducts; p++ {
		for i := range min(seedRelated, nProducts-1) {
			ins("related", p, i, (p+i)%nProducts+1) // the next products, never p itself
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	return nil
}
