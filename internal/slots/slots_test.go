package slots

import "testing"

// Known slots, as CLUSTER KEYSLOT answers on Redis 7.
func TestOf(t *testing.T) {
	for key, want := range map[string]int{
		"t": 15891, "a": 15495, "b": 3300, "zz": 14415,
		"{t}anything": 15891, "x{t}y": 15891, "{}t": Of("{}t"), "": 0,
	} {
		if got := Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestTagsCoverEverySlot(t *testing.T) {
	tags := Tags()
	if len(tags) != Count {
		t.Fatalf("%d tags, want %d", len(tags), Count)
	}
	for s, tag := range tags {
		if tag == "" || len(tag) > 4 || Of(tag) != s {
			t.Fatalf("slot %d: tag %q (slot %d)", s, tag, Of(tag))
		}
	}
}

func TestChannelInItsSlot(t *testing.T) {
	for _, base := range []string{"shop:invalidate", "", "a:b:c"} {
		chs := Channels(base)
		for s, ch := range chs {
			if Of(ch) != s {
				t.Fatalf("Channel(%q, %d) = %q is in slot %d", base, s, ch, Of(ch))
			}
		}
	}
}
