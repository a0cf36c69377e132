package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// HeaderDBQueries is the response header that says how many database
// statements the request ran (the loads it started included).
const HeaderDBQueries = "X-DB-Queries"

// HeaderInstance is the response header naming the replica that answered.
const HeaderInstance = "X-Instance"

// maxBody bounds a request body, in bytes.
const maxBody = 1 << 16

// Handler returns the service's HTTP API, JSON in and out:
//
//	GET  /products/{id}    the product page; counts a view (ProductView)
//	PUT  /products/{id}    update name and price (ProductUpdate); the new page
//	POST /products/{id}    the same as PUT
//	GET  /categories/{id}  the category listing (Listing)
//	PUT  /categories/{id}  rename the category (CategoryUpdate)
//	GET  /healthz          200 while the replica serves
//	GET  /stats            the replica's counters (ServiceStats)
//
// Their answers carry HeaderDBQueries, and with the cache HeaderInstance;
// those of the router (404 for other paths, 405) do not.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", s.getProduct)
	mux.HandleFunc("PUT /products/{id}", s.putProduct)
	mux.HandleFunc("POST /products/{id}", s.putProduct)
	mux.HandleFunc("GET /categories/{id}", s.getCategory)
	mux.HandleFunc("PUT /categories/{id}", s.putCategory)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /stats", s.stats)
	return mux
}

// handlerFunc is a handler that returns its answer or its error; serve
// writes either with the request's statement count.
type handlerFunc func(r *http.Request) (any, error)

func (s *Service) serve(w http.ResponseWriter, r *http.Request, h handlerFunc) {
	ctx, queries := CountQueries(r.Context())
	v, err := h(r.WithContext(ctx))
	w.Header().Set(HeaderDBQueries, strconv.FormatInt(queries(), 10))
	if s.cache != nil {
		w.Header().Set(HeaderInstance, s.cache.InstanceID())
	}
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, errInvalid):
			code = http.StatusBadRequest
		case errors.Is(err, ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, ErrConflict):
			code = http.StatusConflict
		case r.Context().Err() != nil:
			code = http.StatusServiceUnavailable // the client left
		default:
			s.log.Error("catalog: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) // a failed write means the client left
}

func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return 0, fmt.Errorf("%w: id %q is not a positive integer", errInvalid, r.PathValue("id"))
	}
	return id, nil
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", errInvalid, err)
	}
	return nil
}

func (s *Service) getProduct(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		p, err := s.Product(r.Context(), id)
		if err != nil {
			return nil, err
		}
		// A view that cannot be counted (Redis failing) does not fail the
		// page: it is counted in ServiceStats.ViewErrors.
		views, _ := s.View(r.Context(), id)
		return ProductView{ProductDetail: p, Views: views}, nil
	})
}

func (s *Service) putProduct(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		var u ProductUpdate
		if err := decodeBody(r, &u); err != nil {
			return nil, err
		}
		return s.UpdateProduct(r.Context(), id, u)
	})
}

func (s *Service) getCategory(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		return s.Category(r.Context(), id)
	})
}

func (s *Service) putCategory(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		var u CategoryUpdate
		if err := decodeBody(r, &u); err != nil {
			return nil, err
		}
		if err := s.RenameCategory(r.Context(), id, u.Name); err != nil {
			return nil, err
		}
		return s.Category(r.Context(), id)
	})
}

func (s *Service) healthz(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, func(*http.Request) (any, error) {
		return map[string]any{"status": "ok", "cached": s.cache != nil}, nil
	})
}

func (s *Service) stats(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, func(*http.Request) (any, error) { return s.Stats(), nil })
}
