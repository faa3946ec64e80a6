// Package chat owns conversations and how a model sees them: OpenAI-style messages, the
// model's Jinja chat template rendered as transformers' apply_chat_template renders it
// (chat_template.jinja, else tokenizer_config.json's chat_template, with the special tokens,
// raise_exception, strftime_now and tojson it passes, trim_blocks and lstrip_blocks on), the
// text the template writes to end an assistant turn, and the plain-text form a black-box
// ranker reads (roles as words, no template tokens).
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/ardanlabs/jinja"

	"github.com/cyclealign/cyclealign/internal/files"
)

// Message is one turn of a conversation, as the OpenAI API and TRL's datasets write it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// UnmarshalJSON reads a message as OpenAI's API sends it: content a string, null, or a list of
// content parts whose text parts are joined with newlines (as vLLM joins them); other parts
// (images, audio) are refused by name.
func (m *Message) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	m.Role, m.Content = raw.Role, ""
	if len(raw.Content) == 0 || string(raw.Content) == "null" {
		return nil
	}
	if json.Unmarshal(raw.Content, &m.Content) == nil {
		return nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw.Content, &parts); err != nil {
		return &ContentError{"message content must be a string or a list of content parts"}
	}
	texts := make([]string, len(parts))
	for i, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return &ContentError{fmt.Sprintf("message content part %d has type %q: only text parts are supported", i, p.Type)}
		}
		texts[i] = *p.Text
	}
	m.Content = strings.Join(texts, "\n")
	return nil
}

// ContentError is a message whose content cannot be read as text.
type ContentError struct{ Msg string }

func (e *ContentError) Error() string { return e.Msg }

// Template is a model's chat template with the special tokens it is rendered with.
type Template struct {
	Source  string // where it came from, for logs and errors
	tmpl    *jinja.Template
	special map[string]string // bos_token, eos_token, unk_token, pad_token ("" when unset)
}

// ErrRaised wraps the message of the template's own raise_exception.
var ErrRaised = errors.New("chat template raised an exception")

// SpecialTokenNames are the special tokens transformers passes to a chat template.
var SpecialTokenNames = []string{"bos_token", "eos_token", "unk_token", "pad_token"}

// Load finds the chat template of a model directory as transformers does: chat_template.jinja,
// else tokenizer_config.json's chat_template (a string, or a list of named templates of which
// "default" is used); the template is nil without error when the model has none. It also
// returns the special tokens of tokenizer_config.json (none without the file).
func Load(dir string) (*Template, map[string]string, error) {
	special, cfgTemplate, err := readTokenizerConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "chat_template.jinja")
	var t *Template
	if b, err := files.ReadFile(path); err == nil {
		t, err = Parse(string(b), path, special)
		return t, special, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	if cfgTemplate != "" {
		t, err = Parse(cfgTemplate, filepath.Join(dir, "tokenizer_config.json")+": chat_template", special)
	}
	return t, special, err
}

// LoadFile reads a Jinja template file (serve --chat-template) with the special tokens of the
// model directory dir.
func LoadFile(path, dir string) (*Template, error) {
	special, _, err := readTokenizerConfig(dir)
	if err != nil {
		return nil, err
	}
	b, err := files.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(string(b), path, special)
}

// Parse compiles a template; source names it in errors.
func Parse(src, source string, special map[string]string) (*Template, error) {
	t, err := jinja.Compile(rewriteTojson(jinjaWhitespace(src)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	sp := map[string]string{}
	for _, n := range SpecialTokenNames {
		sp[n] = special[n]
	}
	return &Template{Source: source, tmpl: t, special: sp}, nil
}

// ReadMessages reads a JSON file holding an array of OpenAI-style messages.
func ReadMessages(path string) ([]Message, error) {
	b, err := files.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var msgs []Message
	if err := json.Unmarshal(b, &msgs); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of messages: %w", path, err)
	}
	return msgs, nil
}

// Prompt is what a model is asked: a conversation, or (Messages nil) a text in the HH dialogue
// format.
type Prompt struct {
	Text     string    `json:"text,omitempty"`
	Messages []Message `json:"messages,omitempty"`
}

// Plain is the prompt as a black-box ranker reads it: the text, or the conversation in words.
func (p Prompt) Plain() string {
	if p.Messages == nil {
		return p.Text
	}
	return Plain(p.Messages)
}

// readTokenizerConfig returns the special tokens of tokenizer_config.json (each a string or an
// AddedToken object) and its chat template; a missing file is no tokens and no template.
func readTokenizerConfig(dir string) (map[string]string, string, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	b, err := files.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	special := map[string]string{}
	for _, n := range SpecialTokenNames {
		v, ok := raw[n]
		if !ok || string(v) == "null" {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			special[n] = s
			continue
		}
		var added struct {
			Content *string `json:"content"`
		}
		if json.Unmarshal(v, &added) != nil || added.Content == nil {
			return nil, "", fmt.Errorf("%s: field %s: want a string or an AddedToken object with \"content\"", path, n)
		}
		special[n] = *added.Content
	}
	var tmpl string
	if v, ok := raw["chat_template"]; ok && string(v) != "null" {
		if json.Unmarshal(v, &tmpl) != nil {
			var named []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err := json.Unmarshal(v, &named); err != nil {
				return nil, "", fmt.Errorf("%s: field chat_template: want a string or a list of {name, template}", path)
			}
			for _, nt := range named {
				if nt.Name == "default" {
					tmpl = nt.Template
				}
			}
			if tmpl == "" {
				return nil, "", fmt.Errorf("%s: field chat_template: a list of named templates without \"default\"", path)
			}
		}
	}
	return special, tmpl, nil
}

// Render renders messages as apply_chat_template(messages, add_generation_prompt=addGen,
// continue_final_message=continueFinal, tokenize=False) does.
func (t *Template) Render(msgs []Message, addGen, continueFinal bool) (string, error) {
	if addGen && continueFinal {
		return "", fmt.Errorf("continue_final_message and add_generation_prompt are not compatible: use continue_final_message to continue the final message, add_generation_prompt to start a new assistant turn")
	}
	if continueFinal && len(msgs) == 0 {
		return "", fmt.Errorf("continue_final_message needs a final message")
	}
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		d := jinja.NewDict()
		d.AsDict().Set("role", jinja.NewString(m.Role))
		d.AsDict().Set("content", jinja.NewString(m.Content))
		list[i] = d
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(list),
		"add_generation_prompt": jinja.NewBool(addGen),
		"tools":                 jinja.None(), // transformers passes both, as None without tools
		"documents":             jinja.None(),
		"raise_exception": jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			msg := ""
			if len(args) > 0 {
				msg = args[0].String()
			}
			return jinja.Undefined(), fmt.Errorf("%w: %s", ErrRaised, msg)
		}),
		tojsonName: jinja.NewCallable(tojsonName, tojson),
		"range":    jinja.NewCallable("range", sandboxRange),
		"strftime_now": jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 1 || !args[0].IsString() {
				return jinja.Undefined(), fmt.Errorf("strftime_now takes one format string")
			}
			return jinja.NewString(strftime(now(), args[0].AsString())), nil
		}),
	}
	for n, v := range t.special {
		if v != "" {
			data[n] = jinja.NewString(v)
		}
	}
	out, err := t.render(data)
	if err != nil {
		if errors.Is(err, ErrRaised) {
			return "", fmt.Errorf("%s: %w", t.Source, err)
		}
		return "", fmt.Errorf("%s: rendering: %w", t.Source, err)
	}
	if continueFinal {
		return cutAfterFinal(out, msgs[len(msgs)-1].Content)
	}
	return out, nil
}

// render runs the template engine, turning its panics (a negative repeat count in
// `'a' * -1` or `indent(-1)`, say) into errors: a model directory's template is untrusted input.
func (t *Template) render(data map[string]jinja.Value) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the template engine failed: %v", r)
		}
	}()
	return t.tmpl.RenderValues(data)
}

// maxRange is jinja2's sandbox limit on range(), which transformers' sandboxed environment
// applies to every chat template.
const maxRange = 100000

// sandboxRange is Python's range(stop), range(start, stop[, step]) with the sandbox's limit.
func sandboxRange(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) < 1 || len(args) > 3 {
		return jinja.Undefined(), fmt.Errorf("range expected 1 to 3 arguments, got %d", len(args))
	}
	n := make([]int64, len(args))
	for i, a := range args {
		if !a.IsInt() {
			return jinja.Undefined(), fmt.Errorf("range: argument %d is not an integer", i+1)
		}
		n[i] = a.AsInt()
	}
	start, stop, step := int64(0), n[0], int64(1)
	if len(n) > 1 {
		start, stop = n[0], n[1]
	}
	if len(n) > 2 {
		step = n[2]
	}
	if step == 0 {
		return jinja.Undefined(), fmt.Errorf("range: step must not be zero")
	}
	// The length in uint64 so that range(-2**63, 2**63-1) does not overflow.
	var count uint64
	if step > 0 && start < stop {
		count = (uint64(stop-start)-1)/uint64(step) + 1
	} else if step < 0 && start > stop {
		count = (uint64(start-stop)-1)/(-uint64(step)) + 1
	}
	if count > maxRange {
		return jinja.Undefined(), fmt.Errorf("range too big: the sandbox blocks ranges larger than %d", maxRange)
	}
	items := make([]jinja.Value, count)
	for i := range items {
		items[i] = jinja.NewInt(start + int64(i)*step)
	}
	return jinja.NewList(items), nil
}

// cutAfterFinal ends the rendering right after the final message's content, so that the model
// continues it (transformers' continue_final_message, trailing-space rule included).
func cutAfterFinal(rendered, final string) (string, error) {
	trimmed := strings.TrimSpace(final)
	at := strings.LastIndex(rendered, trimmed)
	if at < 0 {
		return "", fmt.Errorf("continue_final_message is set but the final message does not appear in the chat after applying the chat template")
	}
	l := len(strings.TrimLeftFunc(final, unicode.IsSpace))
	if rendered[at:min(at+l, len(rendered))] == final {
		return rendered[:at+l], nil
	}
	return rendered[:at+len(trimmed)], nil
}

// TurnEnd is the text the template writes after an assistant message's content (ChatML's
// "<|im_end|>\n", Llama 3's "<|eot_id|>"): what a reply that ended its turn is trained with,
// as TRL's trainers take a completion as what follows the prompt's rendering. A template that
// writes nothing there ends turns with eos_token.
func (t *Template) TurnEnd() (string, error) {
	const marker = "\x00cyclealign-reply\x00"
	out, err := t.Render([]Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: marker}}, false, false)
	if err != nil {
		return "", err
	}
	at := strings.LastIndex(out, marker)
	if at < 0 {
		return "", fmt.Errorf("%s: the template does not write an assistant message's content as given, so its turn end cannot be found", t.Source)
	}
	if end := out[at+len(marker):]; end != "" {
		return end, nil
	}
	return t.special["eos_token"], nil
}

// now is the clock strftime_now reads (tests fix it).
var now = time.Now

// strftime formats t as Python's datetime.strftime does for the directives chat templates use
// (Llama 3's "%d %b %Y"); an unknown directive is written as it stands, as glibc does.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		switch format[i] {
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'Y':
			fmt.Fprintf(&b, "%d", t.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'b':
			b.WriteString(t.Month().String()[:3])
		case 'B':
			b.WriteString(t.Month().String())
		case 'a':
			b.WriteString(t.Weekday().String()[:3])
		case 'A':
			b.WriteString(t.Weekday().String())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (t.Hour()+11)%12+1)
		case 'p':
			b.WriteString(map[bool]string{true: "PM", false: "AM"}[t.Hour() >= 12])
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}

// Plain writes a conversation as plain text for a black-box ranker: each turn as its role in
// words and its content, turns separated by blank lines, no template tokens.
func Plain(msgs []Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteString("\n\n")
		}
		role := m.Role
		if role != "" {
			role = strings.ToUpper(role[:1]) + role[1:]
		}
		b.WriteString(role + ": " + m.Content)
	}
	return b.String()
}
