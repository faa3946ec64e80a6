package data

import (
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/parquet-go/parquet-go"
)

func write(t *testing.T, name, body string) string {
	p := filepath.Join(t.TempDir(), name)
	if strings.HasSuffix(name, ".gz") {
		f, _ := os.Create(p)
		z := gzip.NewWriter(f)
		z.Write([]byte(body))
		z.Close()
		f.Close()
		return p
	}
	os.WriteFile(p, []byte(body), 0o644)
	return p
}

func TestReadHH(t *testing.T) {
	body := `{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."}
{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}

{"chosen": "\n\nHuman: Q\n\nAssistant: good", "rejected": "\n\nHuman: Q\n\nAssistant: bad"}
`
	for _, name := range []string{"hh.jsonl", "hh.jsonl.gz"} {
		pairs, skipped, err := ReadHH(write(t, name, body))
		if err != nil {
			t.Fatal(err)
		}
		if len(pairs) != 2 || skipped != 1 {
			t.Fatalf("%s: %d pairs, %d skipped", name, len(pairs), skipped)
		}
		p := pairs[0]
		if p.Prompt != "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:" || p.Chosen != " Why did the chicken cross the road?" || p.Rejected != " No." {
			t.Fatalf("multi-turn split: %+v", p)
		}
	}
	for _, c := range []struct{ body, want string }{
		{"{\"chosen\": \"x\"}\n", "line 1: want"},
		{`{"chosen": "\n\nHuman: Q\n\nAssistant: a", "rejected": "\n\nHuman: Q\n\nAssistant: b"}` + "\n{oops\n", "line 2: invalid JSON"},
		{`{"chosen": "no turns", "rejected": "no turns"}`, "line 1: dialogue has no"},
		{"\n", "no HH-RLHF pairs"},
		{`{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}`, "in all 1 rows the chosen and rejected prompts differ"},
	} {
		p := write(t, "bad.jsonl", c.body)
		_, _, err := ReadHH(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: %v", c.body, err)
		}
	}
}

func TestReadPrompts(t *testing.T) {
	p := write(t, "p.jsonl", `{"prompt": "\n\nHuman: a\n\nAssistant:"}
{"chosen": "\n\nHuman: b\n\nAssistant: yes", "rejected": "\n\nHuman: b\n\nAssistant: no"}
`)
	got, err := ReadChatPrompts(p)
	if err != nil || len(got) != 2 || got[1].Text != "\n\nHuman: b\n\nAssistant:" {
		t.Fatalf("%q %v", got, err)
	}
	bad := write(t, "bad.jsonl", `{"prompt": "ok"}`+"\n"+`{"text": "x"}`+"\n")
	if _, err := ReadChatPrompts(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad prompt line: %v", err)
	}
}

func TestSplitIsDisjointAndDeterministic(t *testing.T) {
	var pairs []Pair
	for i := 0; i < 1000; i++ {
		pairs = append(pairs, Pair{Prompt: fmt.Sprint("p", i), Chosen: "c", Rejected: "r"})
	}
	a, b := Split(pairs), Split(pairs)
	seen := map[string]string{}
	parts := map[string][]Pair{"base": a.Base, "judge": a.Judge, "evaluator": a.Evaluator, "align": a.Align, "test": a.Test}
	total := 0
	for name, ps := range parts {
		total += len(ps)
		for _, p := range ps {
			if prev, ok := seen[p.Prompt]; ok {
				t.Fatalf("%s is in %s and %s", p.Prompt, prev, name)
			}
			seen[p.Prompt] = name
		}
	}
	if total != 1000 || len(a.Base) != 400 || len(a.Judge) != 200 || len(a.Evaluator) != 200 || len(a.Align) != 125 || len(a.Test) != 75 {
		t.Fatalf("sizes %d %d %d %d %d", len(a.Base), len(a.Judge), len(a.Evaluator), len(a.Align), len(a.Test))
	}
	if a.Test[3] != b.Test[3] || a.Base[0] == pairs[0] && a.Base[1] == pairs[1] {
		t.Fatal("split is not a fixed shuffle")
	}
	// Appending to a part leaves the next one as it was.
	first := a.Evaluator[0]
	_ = append(a.Judge, Pair{Prompt: "appended"})
	if a.Evaluator[0] != first {
		t.Fatal("appending to the judge part overwrote the evaluator part")
	}
}

// A .gz cut short is reported as what it is, not as the cut-off line it leaves ("line 982:
// invalid JSON" before).
func TestTruncatedGzipNamed(t *testing.T) {
	var body strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&body, `{"prompt": "\n\nHuman: question %d about something long enough\n\nAssistant:"}`+"\n", i)
	}
	p := write(t, "p.jsonl.gz", body.String())
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)*2/3], 0o644)
	_, err := ReadChatPrompts(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "unexpected EOF") || strings.Contains(err.Error(), "invalid JSON") {
		t.Fatalf("truncated gzip: %v", err)
	}
}

// A FIFO given as a data file is refused at once instead of blocking for ever.
func TestFIFORefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "prompts.jsonl")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadChatPrompts(p); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "named pipe") {
			t.Fatalf("FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO blocked")
	}
}

// The dataset formats TRL documents, as .jsonl and as a .json array: text and conversational
// prompts, {"messages"} rows (the turns before the last assistant turn), preference rows with an
// explicit or implicit prompt, and HH rows; a row that fits none names the file, row and field.
func TestReadChatPrompts(t *testing.T) {
	conv := []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}
	rows := []string{
		`{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}`,
		`{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}`,
		`{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": [{"role": "assistant", "content": "Go away."}]}`,
		`{"chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No."}]}`,
	}
	jsonl := write(t, "c.jsonl", strings.Join(rows, "\n")+"\n")
	array := write(t, "c.json", "[\n"+strings.Join(rows, ",\n")+"\n]")
	gz := write(t, "c.jsonl.gz", strings.Join(rows, "\n"))
	for _, p := range []string{jsonl, array, gz} {
		got, err := ReadChatPrompts(p)
		if err != nil || len(got) != len(rows) {
			t.Fatalf("%s: %d prompts, %v", p, len(got), err)
		}
		for i, g := range got {
			if !slices.Equal(g.Messages, conv) {
				t.Errorf("%s row %d: %+v", p, i, g)
			}
		}
	}
	texts := write(t, "t.jsonl", `{"prompt": "\n\nHuman: a\n\nAssistant:"}`+"\n"+
		`{"prompt": "Q?", "chosen": "yes", "rejected": "no"}`+"\n"+
		`{"chosen": "\n\nHuman: b\n\nAssistant: yes", "rejected": "\n\nHuman: b\n\nAssistant: no"}`+"\n")
	got, err := ReadChatPrompts(texts)
	if err != nil || len(got) != 3 || got[0].Text != "\n\nHuman: a\n\nAssistant:" || got[1].Text != "Q?" || got[2].Text != "\n\nHuman: b\n\nAssistant:" || got[0].Messages != nil {
		t.Fatalf("text prompts: %+v %v", got, err)
	}
	for _, c := range []struct{ name, body, want string }{
		{"bad.jsonl", rows[0] + "\n" + `{"prompt": 5}`, "line 2: field \"prompt\": want a string or a list"},
		{"bad.jsonl", `{"messages": [{"content": "x"}]}`, `line 1: field "messages": message 0 has no role`},
		{"bad.jsonl", `{"messages": [{"role": "assistant", "content": "x"}]}`, `line 1: field "messages": no turns`},
		{"bad.json", "[" + rows[1] + `, {"text": "x"}]`, `row 2: no prompt`},
		{"bad.json", `{"prompt": "x"}`, "must be a JSON array"},
		{"mixed.jsonl", rows[0] + "\n" + `{"prompt": "text"}`, "line 2: a text prompt among conversation"},
		{"bad.jsonl", `{"prompt": [{"role": "user", "content": [{"type": "image_url"}]}]}`, `field "prompt"`},
	} {
		p := write(t, c.name, c.body)
		if _, err := ReadChatPrompts(p); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s %q: %v, want %q", c.name, c.body, err, c.want)
		}
	}
}

// Parquet as `datasets` writes it (optional columns; messages as list<struct<content, role>>):
// prompts and preference rows read like their JSON lines, and a row that fits no format names
// the file and row.
func TestParquet(t *testing.T) {
	type msg struct {
		Content *string `parquet:"content,optional"`
		Role    *string `parquet:"role,optional"`
	}
	type row struct {
		Prompt   []msg   `parquet:"prompt,optional,list"`
		Chosen   []msg   `parquet:"chosen,optional,list"`
		Rejected []msg   `parquet:"rejected,optional,list"`
		Source   *string `parquet:"source,optional"`
		Score    float64 `parquet:"score"`
	}
	s := func(x string) *string { return &x }
	p := filepath.Join(t.TempDir(), "train-00000-of-00001.parquet")
	f, _ := os.Create(p)
	err := parquet.Write(f, []row{
		{Prompt: []msg{{s("Be brief."), s("system")}, {s("Hi"), s("user")}}, Chosen: []msg{{s("Hello."), s("assistant")}}, Rejected: []msg{{s("No."), s("assistant")}}, Source: s("x"), Score: 1},
		{Prompt: []msg{{s("Name a colour."), s("user")}}, Chosen: []msg{{s("Red."), s("assistant")}}, Rejected: []msg{{s("Go away."), s("assistant")}}},
	})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadChatPrompts(p)
	if err != nil || len(got) != 2 || !slices.Equal(got[0].Messages, []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}) ||
		got[1].Messages[0].Content != "Name a colour." {
		t.Fatalf("%+v %v", got, err)
	}
	var prefs []string
	err = EachRecord(p, func(rec []byte, _ string) error {
		_, c, r, ok, err := Preference(rec)
		if ok {
			prefs = append(prefs, c, r)
		}
		return err
	})
	if err != nil || !slices.Equal(prefs, []string{"Hello.", "No.", "Red.", "Go away."}) {
		t.Fatalf("preferences %q %v", prefs, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.parquet")
	f, _ = os.Create(bad)
	parquet.Write(f, []struct {
		Source *string `parquet:"source,optional"`
	}{{s("a")}, {s("b")}})
	f.Close()
	if _, err := ReadChatPrompts(bad); err == nil || !strings.Contains(err.Error(), bad+": row 1: no prompt") {
		t.Fatalf("a row without a prompt: %v", err)
	}
	os.WriteFile(bad, []byte("not parquet at all"), 0o644)
	if _, err := ReadChatPrompts(bad); err == nil || !strings.Contains(err.Error(), "not a Parquet file") {
		t.Fatalf("garbage: %v", err)
	}
}

// An HH row is a preference with the prompt up to the last "\n\nAssistant:"; rows whose two
// dialogues have different prompts, or no assistant turn, are refused.
func TestPreferenceHHRows(t *testing.T) {
	p, c, r, ok, err := Preference([]byte(`{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}`))
	if err != nil || !ok || p.Text != "\n\nHuman: Hi\n\nAssistant:" || c != " Hello!" || r != " Go away." {
		t.Fatalf("%+v %q %q %v %v", p, c, r, ok, err)
	}
	for _, bad := range []string{
		`{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}`,
		`{"chosen": "no turns", "rejected": "no turns"}`,
	} {
		if _, _, _, ok, err := Preference([]byte(bad)); !ok || err == nil {
			t.Errorf("%s: %v %v", bad, ok, err)
		}
	}
	if _, _, _, ok, err := Preference([]byte(`{"prompt": "x"}`)); ok || err != nil {
		t.Errorf("a row without chosen and rejected: %v %v", ok, err)
	}
}
