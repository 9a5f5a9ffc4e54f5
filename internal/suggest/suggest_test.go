package suggest

import "testing"

func TestClosest(t *testing.T) {
	t.Parallel()
	commands := []string{"deadletters", "migrate", "parked", "status", "version", "wal"}
	for _, tt := range []struct {
		name, want string
	}{
		{"migrat", "migrate"},   // one deletion
		{"mirgate", "migrate"},  // a swap: two edits
		{"stauts", "status"},    // a swap
		{"dead", "deadletters"}, // a prefix
		{"ver", "version"},      // a prefix, nearer by edits to wal's neighbours
		{"nope", ""},            // nothing close
		{"migrations", ""},      // three edits away
		{"", ""},
	} {
		if got := Closest(tt.name, commands, 2); got != tt.want {
			t.Errorf("Closest(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestDistance(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"migrat", "migrate", 1}, {"same", "same", 0},
	} {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
