package chat

import (
	"strings"
	"unicode"
)

// jinjaWhitespace applies Jinja's whitespace control to a template as transformers configures
// it (trim_blocks, lstrip_blocks, the "-" and "+" markers, one trailing newline dropped, newlines
// normalised) and writes every text that remains as a string expression, leaving the library
// no text to trim. ardanlabs/jinja (v1.8.0, and v1.12.0 too) applies each trim to the nearest
// text even across other tags: "{% for m in xs %}{{ m }}\n{% endfor %}" lost its newlines, and
// "User: {{ x }}{%- endif %}" the space after "User:". In Jinja a trim acts only on the text
// right next to its tag.
func jinjaWhitespace(src string) string {
	src = strings.TrimSuffix(strings.TrimSuffix(src, "\n"), "\r")
	spans := tagSpans(src)
	type tag struct {
		kind          byte // '{' variable, '%' block, '#' comment
		inner         string
		lMinus, lPlus bool
		rMinus, rPlus bool
		raw           bool // {% raw %} or {% endraw %}: dropped, the raw text stays as text
		before, after int  // indexes of the texts around it
	}
	var texts []string
	var tags []tag
	at := 0
	for _, sp := range spans {
		texts = append(texts, src[at:sp[0]])
		body := src[sp[0]+2 : sp[1]-2]
		t := tag{kind: src[sp[0]+1], before: len(texts) - 1, after: len(texts)}
		if strings.HasPrefix(body, "-") || strings.HasPrefix(body, "+") {
			t.lMinus, t.lPlus = body[0] == '-', body[0] == '+'
			body = body[1:]
		}
		if strings.HasSuffix(body, "-") || strings.HasSuffix(body, "+") {
			t.rMinus, t.rPlus = body[len(body)-1] == '-', body[len(body)-1] == '+'
			body = body[:len(body)-1]
		}
		if t.kind == '%' {
			w := strings.TrimSpace(body)
			t.raw = w == "raw" || w == "endraw"
		}
		t.inner = body
		tags = append(tags, t)
		at = sp[1]
	}
	texts = append(texts, src[at:])
	for i, s := range texts {
		texts[i] = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(s)
	}
	// Left sides first: lstrip_blocks looks at the source line, before any trim_blocks.
	for _, t := range tags {
		s := &texts[t.before]
		switch {
		case t.lMinus:
			*s = strings.TrimRightFunc(*s, unicode.IsSpace)
		case t.kind != '{' && !t.lPlus:
			line := strings.TrimRight(*s, " \t")
			if strings.HasSuffix(line, "\n") || line == "" && t.before == 0 {
				*s = line
			}
		}
	}
	for _, t := range tags {
		s := &texts[t.after]
		switch {
		case t.rMinus:
			*s = strings.TrimLeftFunc(*s, unicode.IsSpace)
		case t.kind != '{' && !t.rPlus:
			*s = strings.TrimPrefix(*s, "\n")
		}
	}
	var out strings.Builder
	text := func(s string) {
		if s != "" {
			out.WriteString("{{ '" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "' }}")
		}
	}
	for i, t := range tags {
		text(texts[i])
		if t.kind == '#' || t.raw {
			continue
		}
		open, close := "{{", "}}"
		if t.kind == '%' {
			open, close = "{%", "%}"
		}
		out.WriteString(open + t.inner + close)
	}
	text(texts[len(texts)-1])
	return out.String()
}

// tagSpans returns the [start, end) of every tag of a Jinja source ({{ }}, {% %}, {# #}),
// skipping string literals inside tags and the body of {% raw %} blocks.
func tagSpans(src string) [][2]int {
	var spans [][2]int
	for i := 0; i+1 < len(src); {
		open := src[i : i+2]
		if open != "{{" && open != "{%" && open != "{#" {
			i++
			continue
		}
		closer := map[string]string{"{{": "}}", "{%": "%}", "{#": "#}"}[open]
		end := -1
		var quote byte
		for j := i + 2; j+1 < len(src); j++ {
			c := src[j]
			switch {
			case open == "{#":
			case quote != 0:
				if c == '\\' {
					j++
				} else if c == quote {
					quote = 0
				}
				continue
			case c == '\'' || c == '"':
				quote = c
				continue
			}
			if src[j:j+2] == closer {
				end = j + 2
				break
			}
		}
		if end < 0 {
			return spans // unterminated: the compiler reports it
		}
		spans = append(spans, [2]int{i, end})
		i = end
		if open == "{%" && strings.Trim(src[spans[len(spans)-1][0]+2:end-2], "-+ \t\r\n") == "raw" {
			// Nothing inside {% raw %} is a tag, up to {% endraw %}.
			k := strings.Index(src[i:], "endraw")
			if k < 0 {
				return spans
			}
			if s := strings.LastIndex(src[:i+k], "{%"); s >= i {
				i = s
			} else {
				i += k
			}
		}
	}
	return spans
}
