package codec_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"

	"github.com/tiercache/tiercache/codec"
)

func ExampleCodec() {
	type user struct {
		Name string `msgpack:"name"`
		Age  int    `msgpack:"age"`
	}

	c, err := codec.New(codec.Options{})
	if err != nil {
		log.Fatal(err)
	}

	b, err := c.Marshal(user{Name: "Ada", Age: 36})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("header %#02x, %d bytes\n", b[0], len(b))

	var u user
	if err := c.Unmarshal(b, &u); err != nil {
		log.Fatal(err)
	}
	fmt.Println(u.Name, u.Age)

	err = c.Unmarshal(codec.Tombstone(), &u)
	fmt.Println(errors.Is(err, codec.ErrTombstone))

	err = c.Unmarshal([]byte{0x20, 0xdd, 0xff, 0xff, 0xff, 0xff}, &u)
	fmt.Println(errors.Is(err, codec.ErrCorrupt))
	// Output:
	// header 0x20, 16 bytes
	// Ada 36
	// true
	// true
}

func ExampleValidate() {
	fmt.Println(codec.Validate([]byte{0x92, 0x01, 0xa1, 'x'}, 0)) // [1, "x"]
	fmt.Println(codec.Validate([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, 0))
	// Output:
	// <nil>
	// codec: corrupt value: array at offset 0 claims 4294967295 elements, 0 bytes remain
}

func ExampleCodec_UnmarshalCost() {
	c, err := codec.New(codec.Options{MaxHeap: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	b, err := c.Marshal([]string{"a", "b", "c"})
	if err != nil {
		log.Fatal(err)
	}
	var s []string
	heap, err := c.UnmarshalCost(b, &s)
	fmt.Println(s, heap, err)

	// 100,000 nils: 100 KB of msgpack that a []string would hold as
	// 1.6 MB of string headers.
	bomb := append([]byte{0x20, 0xdd, 0x00, 0x01, 0x86, 0xa0}, bytes.Repeat([]byte{0xc0}, 100_000)...)
	heap, err = c.UnmarshalCost(bomb, &s)
	fmt.Println(heap, errors.Is(err, codec.ErrTooComplex))
	// Output:
	// [a b c] 112 <nil>
	// 0 true
}
