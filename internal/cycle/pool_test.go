package cycle

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
)

func d(prompt string) blackbox.Demo {
	return blackbox.Demo{Prompt: prompt, Candidates: []string{"a", "b"}, Ranking: []int{0, 1}}
}

func TestPoolReplacement(t *testing.T) {
	p := &Pool{Max: 3}
	for i := 0; i < 3; i++ {
		if p.Add(d(fmt.Sprint("p", i)), i, 0) {
			t.Fatal("replaced while not full")
		}
	}
	// Same prompt: replaces that entry, not the oldest.
	upd := d("p1")
	upd.Ranking = []int{1, 0}
	if !p.Add(upd, 5, 1) || len(p.Entries) != 3 || p.Entries[1].Demo.Ranking[0] != 1 || p.Entries[0].Demo.Prompt != "p0" {
		t.Fatalf("same-prompt replacement: %+v", p.Entries)
	}
	// Full: a new prompt replaces the oldest (p0), then the next oldest (p2).
	p.Add(d("p3"), 6, 0)
	p.Add(d("p4"), 7, 0)
	got := map[string]bool{}
	for _, e := range p.Entries {
		got[e.Demo.Prompt] = true
	}
	if len(p.Entries) != 3 || !got["p1"] || !got["p3"] || !got["p4"] {
		t.Fatalf("oldest replacement: %+v", got)
	}
	if (&Pool{Max: 0}).Add(d("x"), 0, 0) {
		t.Fatal("an empty-capacity pool took an entry")
	}
}

func TestPoolSelection(t *testing.T) {
	p := &Pool{Max: 10}
	for _, s := range []string{"how to bake bread", "how to fix a bike", "tell me a joke", "bake a cake"} {
		p.Add(d(s), 0, 0)
	}
	recent := p.Select("tell me a joke", 2, "recent")
	if len(recent) != 2 || recent[0].Prompt != "bake a cake" || recent[1].Prompt != "how to fix a bike" {
		t.Fatalf("recent, same prompt excluded: %v", recent)
	}
	sim := p.Select("bake some bread please", 2, "similar")
	if sim[0].Prompt != "how to bake bread" || sim[1].Prompt != "bake a cake" {
		t.Fatalf("similar: %v", sim)
	}
	if got := p.Select("x", 10, "recent"); len(got) != 4 {
		t.Fatalf("k larger than the pool: %d", len(got))
	}
}

func TestConfigRoundTrip(t *testing.T) {
	c := Defaults()
	c.Model, c.Prompts, c.Out = "m", "p.jsonl", t.TempDir()
	c.Blackbox.URL = "http://x/v1"
	if err := WriteConfig(c); err != nil {
		t.Fatal(err)
	}
	got, err := LoadRunConfig(c.Out)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(c) || got.Stop[0] != "\n\nHuman:" {
		t.Fatalf("config changed on the way through YAML:\n%+v\n%+v", got, c)
	}
}

// TestBatchesNeverRepeatAPrompt: where a pass over the prompts ends inside a batch, the next
// pass's order must not put a prompt into that batch again; every prompt is still used as
// often as the others, and a step's batch is the same however often it is asked for.
func TestBatchesNeverRepeatAPrompt(t *testing.T) {
	prompts := []string{"a", "b", "c", "d", "e", "f", "g"}
	var ps []chat.Prompt
	for _, p := range prompts {
		ps = append(ps, chat.Prompt{Text: p})
	}
	texts := func(b []chat.Prompt) []string {
		out := make([]string, len(b))
		for i, p := range b {
			out[i] = p.Text
		}
		return out
	}
	for seed := uint64(0); seed < 20; seed++ {
		r := &Runner{Cfg: Config{BatchSize: 4, Seed: seed}, Prompts: ps}
		count := map[string]int{}
		for step := 0; step < 21; step++ {
			b := texts(r.promptsFor(step))
			seen := map[string]bool{}
			for _, p := range b {
				if seen[p] {
					t.Fatalf("seed %d step %d: %v repeats %q", seed, step, b, p)
				}
				seen[p] = true
				count[p]++
			}
			if again := texts(r.promptsFor(step)); !slices.Equal(again, b) {
				t.Fatalf("seed %d step %d: %v, then %v", seed, step, b, again)
			}
		}
		for _, p := range prompts {
			if c := count[p]; c < 11 || c > 13 { // 84 draws over 7 prompts: 12 each, give or take a deferral
				t.Fatalf("seed %d: %q used %d times: %v", seed, p, c, count)
			}
		}
	}
}
