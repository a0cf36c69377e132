package catalog

import "time"

// ProductDetail is everything the product page shows, assembled from the
// catalog's tables (DetailQueries statements). It is the value of the
// "product" keyspace: values served from L1 are shared, so callers must not
// mutate it or its slices.
type ProductDetail struct {
	ID          int64         `json:"id"`
	CategoryID  int64         `json:"category_id"`
	Category    string        `json:"category"`
	Name        string        `json:"name"`
	Price       float64       `json:"price"`
	Version     int64         `json:"version"` // bumped by every write of the product's row or category
	UpdatedAt   time.Time     `json:"updated_at"`
	Description string        `json:"description"`
	Images      []Image       `json:"images"`
	Specs       []Spec        `json:"specs"`
	Rating      ReviewSummary `json:"rating"`
	Reviews     []Review      `json:"reviews"` // the latest few
	Stock       []Stock       `json:"stock"`
	Related     []Summary     `json:"related"`
}

// Image is a product picture.
type Image struct {
	URL string `json:"url"`
	Alt string `json:"alt"`
}

// Spec is one line of a product's specification sheet.
type Spec struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ReviewSummary aggregates a product's reviews.
type ReviewSummary struct {
	Count   int64   `json:"count"`
	Average float64 `json:"average"`
}

// Review is one customer review.
type Review struct {
	Author string `json:"author"`
	Rating int    `json:"rating"`
	Body   string `json:"body"`
}

// Stock is the quantity of a product held in one warehouse.
type Stock struct {
	Warehouse string `json:"warehouse"`
	Quantity  int64  `json:"quantity"`
}

// Summary is a product as a listing shows it.
type Summary struct {
	ID      int64   `json:"id"`
	Name    string  `json:"name"`
	Price   float64 `json:"price"`
	Version int64   `json:"version"`
}

// Listing is a category page: the category and its products, by id. It is
// the value of the "category" keyspace (shared when served from L1: do not
// mutate).
type Listing struct {
	ID       int64     `json:"id"`
	Name     string    `json:"name"`
	Products []Summary `json:"products"`
}

// ProductUpdate is the body of PUT /products/{id}.
type ProductUpdate struct {
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

// CategoryUpdate is the body of PUT /categories/{id}.
type CategoryUpdate struct {
	Name string `json:"name"`
}

// ProductView is the answer of GET /products/{id}: the detail and the
// product's view count after this view.
type ProductView struct {
	ProductDetail
	Views int64 `json:"views"`
}
