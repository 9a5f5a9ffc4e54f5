// Package suggest finds the word an operator most likely meant: the
// "did you mean" of the binaries, for a mistyped command or variable.
package suggest

// Closest returns the candidate that name is most likely a typo of: one
// that name is a prefix of ("mig" for "migrate"), or else the nearest
// within maxDist edits (ties go to the candidate first in alphabetical
// order). It returns "" when none is close.
func Closest(name string, candidates []string, maxDist int) string {
	best, bestDist := "", maxDist+1
	for _, c := range candidates {
		d := Distance(name, c)
		if name != "" && len(name) < len(c) && c[:len(name)] == name {
			d = 0 // a prefix beats any typo
		}
		if d < bestDist || (d == bestDist && c < best) {
			best, bestDist = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between a and b: the fewest
// single-byte insertions, deletions and substitutions that turn one into
// the other.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
