package chat

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// Every real template of testdata/templates.json (ollama's index, Qwen2.5-Instruct, Llama 3.2,
// Qwen3) renders every conversation exactly as Python's jinja2 does with transformers'
// settings (testdata/render.py wrote renderings.json), and raises where it raises.
func TestRenderingsMatchJinja2(t *testing.T) {
	var templates []struct{ Name, From, Template string }
	var convs [][]Message
	var want []struct {
		Template, Conversation int
		AddGenerationPrompt    bool `json:"add_generation_prompt"`
		ContinueFinal          bool `json:"continue_final_message"`
		Text, Error            *string
	}
	now = func() time.Time { return time.Date(2026, 12, 6, 14, 30, 5, 0, time.UTC) } // render.py's clock
	t.Cleanup(func() { now = time.Now })
	readJSON(t, "testdata/templates.json", &templates)
	readJSON(t, "testdata/conversations.json", &convs)
	readJSON(t, "testdata/renderings.json", &want)
	special := map[string]string{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
	compiled := make([]*Template, len(templates))
	for i, tm := range templates {
		var err error
		if compiled[i], err = Parse(tm.Template, tm.Name, special); err != nil {
			t.Fatalf("template %d (%s): %v", i, tm.Name, err)
		}
	}
	same, raised := 0, 0
	for _, w := range want {
		got, err := compiled[w.Template].Render(convs[w.Conversation], w.AddGenerationPrompt, w.ContinueFinal)
		name := templates[w.Template].Name
		switch {
		case w.Error != nil:
			if err == nil || (!w.ContinueFinal && (!errors.Is(err, ErrRaised) || !strings.Contains(err.Error(), *w.Error))) {
				t.Errorf("template %d (%s), conversation %d: jinja2 raised %q, got %q, %v", w.Template, name, w.Conversation, *w.Error, got, err)
			}
		case err != nil:
			t.Errorf("template %d (%s), conversation %d, add_generation_prompt %v: %v", w.Template, name, w.Conversation, w.AddGenerationPrompt, err)
		case got != *w.Text:
			t.Errorf("template %d (%s), conversation %d, add_generation_prompt %v:\n got %q\nwant %q", w.Template, name, w.Conversation, w.AddGenerationPrompt, got, *w.Text)
		default:
			same++
		}
		if w.Error != nil {
			raised++
		}
	}
	t.Logf("%d of %d renderings equal jinja2's, the %d others raised as in jinja2", same, len(want), raised)
}

const chatml = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Where the template comes from: chat_template.jinja first, else tokenizer_config.json's
// chat_template (a string, or the "default" of a list), else none; the special tokens are
// strings or AddedToken objects.
func TestLoadFindsTheTemplateAsTransformersDoes(t *testing.T) {
	dir := t.TempDir()
	if tm, sp, err := Load(dir); tm != nil || len(sp) != 0 || err != nil {
		t.Fatalf("no files: %v %v", tm, err)
	}
	cfg := `{"bos_token": {"content": "<|begin|>", "lstrip": false}, "eos_token": "<|im_end|>", "pad_token": null, "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}{{ pad_token is defined }}"}]}`
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644)
	tm, sp, err := Load(dir)
	if err != nil || sp["bos_token"] != "<|begin|>" || sp["eos_token"] != "<|im_end|>" || sp["pad_token"] != "" {
		t.Fatalf("special tokens %v, %v", sp, err)
	}
	if got, _ := tm.Render(nil, false, false); got != "<|begin|>D<|im_end|>False" || !strings.Contains(tm.Source, "tokenizer_config.json") {
		t.Fatalf("list template: %q from %s", got, tm.Source)
	}
	os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte(chatml), 0o644)
	if tm, _, err = Load(dir); err != nil || !strings.HasSuffix(tm.Source, "chat_template.jinja") {
		t.Fatalf("chat_template.jinja first: %v %v", tm, err)
	}
	for _, bad := range []string{`{"eos_token": 3}`, `{"chat_template": [{"name": "x", "template": "y"}]}`, `{"chat_template": 5}`, `{`} {
		os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(bad), 0o644)
		if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "tokenizer_config.json") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// The turn end is what the template writes after an assistant message; a template that
// raises does so with its own message; a conversation reads as plain text for a ranker.
func TestTurnEndRaiseAndPlain(t *testing.T) {
	special := map[string]string{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
	for _, c := range []struct{ src, want string }{
		{chatml, "<|im_end|>\n"},
		{"{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}", "<|eot_id|>"},
		{"{% for m in messages %}{{ m['content'] }}{% endfor %}", "<|eot_id|>"},
	} {
		tm, err := Parse(c.src, "t", special)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tm.TurnEnd(); err != nil || got != c.want {
			t.Errorf("%s: turn end %q %v, want %q", c.src, got, err, c.want)
		}
	}
	tm, _ := Parse("{{ raise_exception('Conversation roles must alternate user/assistant') }}", "model/chat_template.jinja", nil)
	if _, err := tm.Render([]Message{{"user", "x"}}, true, false); err == nil || !strings.Contains(err.Error(), "Conversation roles must alternate") || !strings.Contains(err.Error(), "model/chat_template.jinja") {
		t.Fatalf("raise_exception: %v", err)
	}
	tm, _ = Parse(chatml, "t", nil)
	if _, err := tm.Render([]Message{{"user", "x"}}, true, true); err == nil {
		t.Fatal("add_generation_prompt with continue_final_message")
	}
	got := Plain([]Message{{"system", "Be kind."}, {"user", "Hi <|im_end|>"}, {"assistant", "Hello."}})
	if got != "System: Be kind.\n\nUser: Hi <|im_end|>\n\nAssistant: Hello." {
		t.Fatalf("plain: %q", got)
	}
}

func TestStrftime(t *testing.T) {
	tm := time.Date(2024, 7, 6, 15, 4, 5, 0, time.UTC)
	if got := strftime(tm, "%d %b %Y|%B %A %a %H:%M:%S %I%p %j %y %% %Q"); got != "06 Jul 2024|July Saturday Sat 15:04:05 03PM 188 24 % %Q" {
		t.Fatal(got)
	}
}

// Whitespace control is Jinja's: a trim acts only on the text right next to its tag (the
// library applied it across tags). Expected renderings are Python jinja2's with trim_blocks and
// lstrip_blocks, string literals and raw blocks holding delimiters included.
func TestWhitespaceControlIsJinjas(t *testing.T) {
	matchJinja2(t, map[string]string{
		"{{ 'a' -}}{% if true %} B{% endif %}":                          "a B",
		"X {{ 'v' }}{%- if true %}Y{% endif %}":                         "X vY",
		"A \n{%- if true -%}\n B {{- 'c' -}} D\n{%- endif %}":           "ABcD",
		"S {{ '}}{%-' }}{%- if true %} T{% endif %}":                    "S }}{%- T",
		"{# c -#}{%- if true %} V {% endif %}":                          " V ",
		"{% for i in [1, 2] %}{{ i }}\n{% endfor %}":                    "1\n2\n",
		"{% if true %}{{ 'a' }}\n{% endif %}B":                          "a\nB",
		"{% if true %}{# c #}\nX{% endif %}":                            "X",
		"  {% if true %}\n    x\n    {% endif %}\nend\n":                "    x\nend",
		"a\r\n{{ 'b' }}\r\n":                                            "a\nb",
		"{% if true %}\n  {% if true %}  y\n  {% endif %}\n{% endif %}": "  y\n",
		"R {% raw %}{{- x }}{% endraw %}{%- if true %} U{% endif %}":    "R {{- x }} U",
		"{%+ if true %}q{% endif +%}\nz":                                "q\nz",
		"it's \\ {{ 'ok' }}":                                            "it's \\ ok",
	})
}

// matchJinja2 renders each template without messages and compares with what jinja2 renders with
// transformers' settings, "" where jinja2 raises.
func matchJinja2(t *testing.T, renderings map[string]string) {
	t.Helper()
	for src, want := range renderings {
		tm, err := Parse(src, "t", nil)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		got, err := tm.Render(nil, false, false)
		switch {
		case want == "" && err == nil:
			t.Errorf("%q rendered %q, jinja2 raises", src, got)
		case want != "" && (err != nil || got != want):
			t.Errorf("%q: %q %v, jinja2 renders %q", src, got, err, want)
		}
	}
}

// tojson takes transformers' arguments (indent, separators, sort_keys, ensure_ascii) and writes
// what Python's json.dumps writes (tojson_renderings.json, by render.py), keys in their order.
func TestTojsonAsTransformers(t *testing.T) {
	var templates []string
	var convs [][]Message
	var want []struct {
		Template, Conversation int
		Text                   string
	}
	readJSON(t, "testdata/tojson.json", &templates)
	readJSON(t, "testdata/conversations.json", &convs)
	readJSON(t, "testdata/tojson_renderings.json", &want)
	for _, w := range want {
		tm, err := Parse(templates[w.Template], "t", nil)
		if err != nil {
			t.Fatalf("%s: %v", templates[w.Template], err)
		}
		got, err := tm.Render(convs[w.Conversation], false, false)
		if err != nil || got != w.Text {
			t.Errorf("%s on conversation %d:\n got %q %v\nwant %q", templates[w.Template], w.Conversation, got, err, w.Text)
		}
	}
}

// range is the sandboxed environment's (transformers renders in jinja2's sandbox): Python's
// range, refused above 100,000 items. Expected renderings and refusals are jinja2's.
func TestRangeIsTheSandboxs(t *testing.T) {
	matchJinja2(t, map[string]string{
		"{% for i in range(3) %}{{ i }},{% endfor %}":                     "0,1,2,",
		"{{ range(2, 11, 3) | join(',') }}":                               "2,5,8",
		"{{ range(5, -4, -2) | join(',') }}":                              "5,3,1,-1,-3",
		"{{ range(3, 1) | length }}|{{ range(-2) | length }}":             "0|0",
		"{{ range(100000) | length }}":                                    "100000",
		"{{ range(0, 200000, 2) | length }}":                              "100000",
		"{{ range(0, 200001, 2) | length }}":                              "",
		"{{ range(100001) | length }}":                                    "",
		"{{ range(-9223372036854775807, 9223372036854775807) | length }}": "",
		"{{ range(1, 2, 0) }}":                                            "",
	})
}

// A template that makes the engine panic, or asks tojson for an indent that would size a huge
// allocation, fails with an error naming the template (FuzzTemplate found the indent).
func TestTemplateFaultsAreErrors(t *testing.T) {
	for _, src := range []string{
		"{{ 'a' * -1 }}",
		"{{ 'x\ny' | indent(-1) }}",
		"{{ messages | tojson(indent=99999999999999999) }}",
		"{{ messages | tojson(indent=1025) }}",
	} {
		tm, err := Parse(src, "model/chat_template.jinja", nil)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		got, err := tm.Render([]Message{{Role: "user", Content: "hi"}}, false, false)
		if err == nil || !strings.Contains(err.Error(), "model/chat_template.jinja") {
			t.Errorf("%q: %q %v, want an error naming the template", src, got, err)
		}
	}
}
