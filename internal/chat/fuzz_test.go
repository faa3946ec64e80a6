package chat

import "testing"

// FuzzTemplate: any template source (a model directory's chat_template.jinja is untrusted
// input) compiles or is refused, and renders or fails, without a panic.
func FuzzTemplate(f *testing.F) {
	f.Add("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
	f.Add("{{- messages | tojson(indent=2, sort_keys=true) -}}\n{%- raw %}{{ x }}{% endraw -%}")
	f.Add("{{ raise_exception('no') }}{# c #}{%+ if true +%}")
	f.Add("{{ '}}' | tojson(")
	f.Fuzz(func(t *testing.T, src string) {
		tm, err := Parse(src, "fuzz", map[string]string{"eos_token": "</s>"})
		if err != nil {
			return
		}
		tm.Render([]Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}}, false, false)
	})
}
