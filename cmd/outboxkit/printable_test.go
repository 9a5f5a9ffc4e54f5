package main

import "testing"

func TestPrintableEscapesTerminalControls(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"order-42", "order-42"},
		{"naïve 注文", "naïve 注文"},
		{"\x1b[2J\x1b]0;pwned\x07key", `\x1b[2J\x1b]0;pwned\akey`},
		{"a\rb\nc\td", `a\rb\nc\td`},
		{"abc\u202egpj.exe", `abc\u202egpj.exe`},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"\x00nul", `\x00nul`},
	}
	for _, c := range cases {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// cell collapses whitespace first, then escapes what is left.
	if got := cell("topic\x1b[31m red\n\tline", 0); got != `topic\x1b[31m red line` {
		t.Errorf("cell = %q", got)
	}
}
