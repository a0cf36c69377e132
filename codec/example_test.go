package codec_test

import (
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
