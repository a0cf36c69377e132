package codec

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// benchValue is a typical cached record.
type benchValue struct {
	ID      int64             `msgpack:"id"`
	Name    string            `msgpack:"name"`
	Email   string            `msgpack:"email"`
	Created time.Time         `msgpack:"created"`
	Active  bool              `msgpack:"active"`
	Tags    []string          `msgpack:"tags"`
	Attrs   map[string]string `msgpack:"attrs"`
	Scores  []float64         `msgpack:"scores"`
	Items   []benchItem       `msgpack:"items"`
}

type benchItem struct {
	SKU   string `msgpack:"sku"`
	Qty   int    `msgpack:"qty"`
	Price int64  `msgpack:"price"`
}

// benchValues are a small value (below the compression threshold) and a
// large one (compressed by default).
func benchValues() []struct {
	name string
	give benchValue
} {
	small := benchValue{
		ID: 42, Name: "Ada Lovelace", Email: "ada@example.com",
		Created: time.Unix(1700000000, 123456789), Active: true,
		Tags:   []string{"admin", "beta", "eu"},
		Attrs:  map[string]string{"plan": "pro", "locale": "en-GB"},
		Scores: []float64{0.5, 0.75, 1},
		Items:  []benchItem{{SKU: "A-1", Qty: 1, Price: 999}, {SKU: "B-2", Qty: 3, Price: 1999}},
	}
	large := small
	large.Items = nil
	for i := range 1000 {
		large.Items = append(large.Items, benchItem{SKU: fmt.Sprintf("SKU-%05d", i), Qty: i % 7, Price: int64(i) * 100})
	}
	large.Name = strings.Repeat("large ", 100)
	return []struct {
		name string
		give benchValue
	}{{"small", small}, {"large", large}}
}

func BenchmarkMarshal(b *testing.B) {
	c := newCodec(b, Options{})
	for _, bv := range benchValues() {
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Marshal(&bv.give); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarshalFloor is msgpack.Marshal of the same values.
func BenchmarkMarshalFloor(b *testing.B) {
	for _, bv := range benchValues() {
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := msgpack.Marshal(&bv.give); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	c := newCodec(b, Options{})
	for _, bv := range benchValues() {
		data, err := c.Marshal(&bv.give)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var v benchValue
				if err := c.Unmarshal(data, &v); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "envelope-bytes")
		})
	}
}

// BenchmarkUnmarshalFloor is msgpack.Unmarshal of the same (uncompressed)
// msgpack bodies: no header, no decompression, no validation. Note that
// msgpack.Unmarshal turns on UsePreallocateValues, which Unmarshal does not.
func BenchmarkUnmarshalFloor(b *testing.B) {
	for _, bv := range benchValues() {
		body, err := msgpack.Marshal(&bv.give)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var v benchValue
				if err := msgpack.Unmarshal(body, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshalFloorDecoder is a pooled msgpack.Decoder reading the same
// bodies from a bytes.Reader, with Unmarshal's decoder settings: the cost of
// msgpack alone in the way Unmarshal uses it.
func BenchmarkUnmarshalFloorDecoder(b *testing.B) {
	for _, bv := range benchValues() {
		body, err := msgpack.Marshal(&bv.give)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			var r bytes.Reader
			for b.Loop() {
				var v benchValue
				r.Reset(body)
				dec := msgpack.GetDecoder()
				dec.Reset(&r)
				if err := dec.Decode(&v); err != nil {
					b.Fatal(err)
				}
				msgpack.PutDecoder(dec)
			}
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	for _, bv := range benchValues() {
		body, err := msgpack.Marshal(&bv.give)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := Validate(body, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(body)), "body-bytes")
		})
	}
}

// BenchmarkHeapBound is the walk that bounds the heap of a decoded value,
// alone: what Unmarshal adds to Validate and msgpack.
func BenchmarkHeapBound(b *testing.B) {
	c := newCodec(b, Options{})
	for _, bv := range benchValues() {
		body, err := msgpack.Marshal(&bv.give)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bv.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var st decodeState
			rv := reflect.ValueOf(new(benchValue))
			for b.Loop() {
				if _, err := c.heapBound(&st, body, rv, DefaultMaxHeapRatio*DefaultMaxSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
