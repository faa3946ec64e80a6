package pipeline

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cyclealign/cyclealign/internal/data"
)

// Two synsets in the wndb(5) layout, after a licence header line.
const wordnetNoun = `  1 This software and database is being provided to you
02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "the dog barked all night"  
02121620 05 n 01 cat 0 001 @ 02120997 n 0000 | feline mammal usually having thick soft fur  
`

func TestCorpusSources(t *testing.T) {
	dir := t.TempDir()
	wn := filepath.Join(dir, "wordnet")
	os.MkdirAll(wn, 0o755)
	os.WriteFile(filepath.Join(wn, "data.noun"), []byte(wordnetNoun), 0o644)
	for _, pos := range []string{"verb", "adj", "adv"} {
		os.WriteFile(filepath.Join(wn, "data."+pos), nil, 0o644)
	}
	fort := filepath.Join(dir, "fortunes")
	os.MkdirAll(fort, 0o755)
	os.WriteFile(filepath.Join(fort, "wisdom"), []byte("A stitch in time\n\tsaves nine.\n%\n"+strings.Repeat("x", 700)+"\n%\nLook before you leap.\n%\n"), 0o644)
	hh := filepath.Join(dir, "hh.jsonl")
	os.WriteFile(hh, []byte(`{"chosen":"\n\nHuman: hi\n\nAssistant: hello","rejected":"\n\nHuman: hi\n\nAssistant: go away"}`+"\n"), 0o644)

	out := filepath.Join(dir, "corpus.jsonl")
	stats, err := Corpus(out, CorpusOptions{HH: []string{hh}, HHRepeat: 2, WordNet: wn, Fortunes: fort, FortuneFiles: []string{"wisdom"}, DocChars: 40, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]int{}
	for _, s := range stats {
		docs[s.Source] = s.Docs
	}
	// HH: 2 dialogues x 2 copies. WordNet: 2 entries, together over 40 characters, so 2
	// documents. Fortunes: the 700-character one is dropped and the other two together exceed
	// 40 characters, so 2.
	if docs["hh-rlhf"] != 4 || docs["wordnet"] != 2 || docs["fortunes"] != 2 {
		t.Fatalf("documents per source: %v", docs)
	}
	texts, err := data.ReadTexts(out)
	if err != nil || len(texts) != 8 {
		t.Fatalf("corpus has %d texts (%v), want 8", len(texts), err)
	}
	for _, want := range []string{
		"dog (also domestic dog): a member of the genus Canis. The dog barked all night.",
		"cat: feline mammal usually having thick soft fur.",
		"A stitch in time\n saves nine.",
		"\n\nHuman: hi\n\nAssistant: go away",
	} {
		if !slices.Contains(texts, want) {
			t.Errorf("corpus lacks %q", want)
		}
	}
	// With DropOffensive an entry with an LDNOOBW word goes, whatever its source; the others stay.
	os.WriteFile(filepath.Join(fort, "wisdom"), []byte("A stitch in time saves nine.\n%\nYou bastards.\n%\nLook before you leap.\n%\n"), 0o644)
	os.WriteFile(hh, []byte(`{"chosen":"\n\nHuman: hi\n\nAssistant: hello","rejected":"\n\nHuman: hi\n\nAssistant: what a bastard"}`+"\n"), 0o644)
	stats, err = Corpus(out, CorpusOptions{HH: []string{hh}, HHRepeat: 2, Fortunes: fort, FortuneFiles: []string{"wisdom"}, DocChars: 1000, DropOffensive: true})
	if err != nil {
		t.Fatal(err)
	}
	if stats[0].Dropped != 1 || stats[0].Docs != 2 || stats[1].Dropped != 1 || stats[1].Docs != 1 {
		t.Fatalf("dropped: %+v", stats)
	}
	texts, _ = data.ReadTexts(out)
	if len(texts) != 3 || slices.ContainsFunc(texts, func(s string) bool { return strings.Contains(s, "bastard") }) ||
		!slices.Contains(texts, "A stitch in time saves nine.\n\nLook before you leap.") {
		t.Fatalf("filtered corpus: %q", texts)
	}
	if _, err := Corpus(filepath.Join(dir, "bad.jsonl"), CorpusOptions{WordNet: filepath.Join(dir, "nowhere")}); err == nil {
		t.Fatal("a missing WordNet directory was accepted")
	}
	os.WriteFile(filepath.Join(wn, "data.verb"), []byte("01234567 29 v 01 run 0 | move fast\nbroken line without gloss\n"), 0o644)
	if _, err := Corpus(filepath.Join(dir, "bad.jsonl"), CorpusOptions{WordNet: wn}); err == nil || !strings.Contains(err.Error(), "data.verb: line 2") {
		t.Fatalf("malformed synset: %v, want the file and line named", err)
	}
}
