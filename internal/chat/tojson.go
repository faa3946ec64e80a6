package chat

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/ardanlabs/jinja"
)

// tojsonName is the global that stands in for a tojson filter given keyword arguments.
const tojsonName = "__cyclealign_tojson"

// rewriteTojson turns each "OPERAND | tojson(ARGS)" inside a tag into
// "__cyclealign_tojson(OPERAND, ARGS)": ardanlabs/jinja v1.8.0's filter sorts keys and escapes
// <, > and & under indent, and reads neither sort_keys nor ensure_ascii, where transformers'
// tojson is json.dumps with all four. A bare "| tojson" is left to the library, which renders
// it as json.dumps does.
func rewriteTojson(src string) string {
	var out strings.Builder
	last := 0
	for _, tag := range tagSpans(src) {
		if src[tag[0]:tag[0]+2] == "{#" {
			continue
		}
		body := src[tag[0]:tag[1]]
		nb := rewriteTojsonIn(body)
		if nb == body {
			continue
		}
		out.WriteString(src[last:tag[0]])
		out.WriteString(nb)
		last = tag[1]
	}
	if last == 0 {
		return src
	}
	out.WriteString(src[last:])
	return out.String()
}

// rewriteTojsonIn rewrites the tojson filters with arguments of one tag's text.
func rewriteTojsonIn(s string) string {
	for {
		lit := literalMask(s)
		at := -1
		for i := 0; i < len(s); i++ {
			if s[i] == '|' && !lit[i] && (i+1 >= len(s) || s[i+1] != '|') && (i == 0 || s[i-1] != '|') {
				rest := strings.TrimLeft(s[i+1:], " \t\r\n")
				if strings.HasPrefix(rest, "tojson") && strings.HasPrefix(strings.TrimLeft(rest[len("tojson"):], " \t"), "(") {
					at = i
					break
				}
			}
		}
		if at < 0 {
			return s
		}
		open := strings.Index(s[at:], "(") + at
		close := matchForward(s, open, lit)
		start := operandStart(s, at, lit)
		if close < 0 || start < 0 {
			return s
		}
		operand := strings.TrimSpace(s[start:at])
		args := strings.TrimSpace(s[open+1 : close])
		call := tojsonName + "(" + operand
		if args != "" {
			call += ", " + args
		}
		s = s[:start] + call + ")" + s[close+1:]
	}
}

// literalMask marks the bytes of s inside string literals.
func literalMask(s string) []bool {
	m := make([]bool, len(s))
	var q byte
	for i := 0; i < len(s); i++ {
		switch {
		case q != 0:
			m[i] = true
			if s[i] == '\\' && i+1 < len(s) {
				i++
				m[i] = true
			} else if s[i] == q {
				q = 0
			}
		case s[i] == '\'' || s[i] == '"':
			q, m[i] = s[i], true
		}
	}
	return m
}

func matchForward(s string, open int, lit []bool) int {
	depth := 0
	for i := open; i < len(s); i++ {
		if lit[i] {
			continue
		}
		switch s[i] {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth--; depth == 0 {
				return i
			}
		}
	}
	return -1
}

// operandStart finds where the operand of the filter at pipe begins: a chain of names,
// literals, attribute and item accesses, calls and earlier filters, as Jinja binds a filter
// tighter than any operator.
func operandStart(s string, pipe int, lit []bool) int {
	i := pipe - 1
	word := func(c byte) bool {
		return c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	for {
		for i >= 0 && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
			i--
		}
		if i < 0 {
			return -1
		}
		end := i
		for i >= 0 {
			switch {
			case lit[i]:
				for i >= 0 && lit[i] {
					i--
				}
			case s[i] == ')' || s[i] == ']' || s[i] == '}':
				depth := 0
				for ; i >= 0; i-- {
					if lit[i] {
						continue
					}
					if s[i] == ')' || s[i] == ']' || s[i] == '}' {
						depth++
					} else if s[i] == '(' || s[i] == '[' || s[i] == '{' {
						if depth--; depth == 0 {
							i--
							break
						}
					}
				}
			case word(s[i]):
				for i >= 0 && word(s[i]) {
					i--
				}
			default:
				goto done
			}
		}
	done:
		if i == end {
			return -1
		}
		j := i
		for j >= 0 && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n') {
			j--
		}
		if j >= 0 && s[j] == '|' && !lit[j] && (j == 0 || s[j-1] != '|') {
			i = j - 1 // an earlier filter of the same chain
			continue
		}
		return i + 1
	}
}

// tojson is transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False), each argument positional or by name.
func tojson(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), fmt.Errorf("tojson: nothing to encode")
	}
	o := jsonOpts{}
	names := []string{"ensure_ascii", "indent", "separators", "sort_keys"}
	get := func(i int) (jinja.Value, bool) {
		if v, ok := kwargs[names[i]]; ok {
			return v, true
		}
		if len(args) > i+1 {
			return args[i+1], true
		}
		return jinja.Value{}, false
	}
	if v, ok := get(0); ok {
		o.ascii = v.IsTruthy()
	}
	if v, ok := get(1); ok && !v.IsNone() && !v.IsUndefined() {
		switch {
		case v.IsInt():
			if v.AsInt() > maxIndent {
				return jinja.Undefined(), fmt.Errorf("tojson: indent %d is above the %d spaces allowed", v.AsInt(), maxIndent)
			}
			o.indent, o.indented = strings.Repeat(" ", int(max(0, v.AsInt()))), true
		case v.IsString():
			o.indent, o.indented = v.AsString(), true
		default:
			return jinja.Undefined(), fmt.Errorf("tojson: indent must be an integer or a string")
		}
	}
	o.item, o.key = ", ", ": "
	if o.indented {
		o.item = ","
	}
	if v, ok := get(2); ok && !v.IsNone() && !v.IsUndefined() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Items[0].IsString() || !v.AsList().Items[1].IsString() {
			return jinja.Undefined(), fmt.Errorf("tojson: separators must be two strings")
		}
		o.item, o.key = v.AsList().Items[0].AsString(), v.AsList().Items[1].AsString()
	}
	if v, ok := get(3); ok {
		o.sort = v.IsTruthy()
	}
	var b strings.Builder
	if err := o.encode(&b, args[0], 0); err != nil {
		return jinja.Undefined(), err
	}
	return jinja.NewString(b.String()), nil
}

// maxIndent bounds tojson's indent: a template's number should not size an allocation.
const maxIndent = 1024

type jsonOpts struct {
	ascii, sort, indented bool
	indent, item, key     string
}

func (o jsonOpts) newline(b *strings.Builder, level int) {
	if o.indented {
		b.WriteByte('\n')
		b.WriteString(strings.Repeat(o.indent, level))
	}
}

func (o jsonOpts) encode(b *strings.Builder, v jinja.Value, level int) error {
	switch {
	case v.IsNone() || v.IsUndefined():
		b.WriteString("null")
	case v.IsBool():
		b.WriteString(map[bool]string{true: "true", false: "false"}[v.AsBool()])
	case v.IsInt():
		b.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		b.WriteString(pyFloat(v.AsFloat()))
	case v.IsString():
		o.str(b, v.AsString())
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(o.item)
			}
			o.newline(b, level+1)
			if err := o.encode(b, it, level+1); err != nil {
				return err
			}
		}
		o.newline(b, level)
		b.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := slices.Clone(d.Keys)
		if len(keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		if o.sort {
			slices.Sort(keys)
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(o.item)
			}
			o.newline(b, level+1)
			o.str(b, k)
			b.WriteString(o.key)
			val, _ := d.Get(k)
			if err := o.encode(b, val, level+1); err != nil {
				return err
			}
		}
		o.newline(b, level)
		b.WriteByte('}')
	default:
		return fmt.Errorf("tojson: a %s is not JSON serializable", v.String())
	}
	return nil
}

// str writes a JSON string as Python's json.dumps does.
func (o jsonOpts) str(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20:
				fmt.Fprintf(b, `\u%04x`, r)
			case o.ascii && r > 0xffff: // a surrogate pair, as Python writes it
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			case o.ascii && r > 0x7f:
				fmt.Fprintf(b, `\u%04x`, r)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyFloat formats a float as Python's repr: the shortest digits that round-trip, in
// exponent form below 1e-4 or from 1e16 on.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, exp, _ := strings.Cut(e, "e")
	x, _ := strconv.Atoi(exp)
	if x < -4 || x >= 16 {
		sign := "+"
		if x < 0 {
			sign, x = "-", -x
		}
		return fmt.Sprintf("%se%s%02d", mant, sign, x)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}
