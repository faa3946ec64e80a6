package pipeline

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/lexicon"
)

// CorpusOptions name the sources of the pre-training corpus. Every source is optional but one.
type CorpusOptions struct {
	HH       []string // HH-RLHF files whose dialogues (chosen and rejected) go in
	HHRepeat int      // copies of the HH dialogues, so the dialogue format dominates (0: 1)
	WordNet  string   // a WordNet 3.0 dict directory (data.noun, data.verb, ...), e.g. /usr/share/wordnet
	Fortunes string   // a fortune directory, e.g. /usr/share/games/fortunes
	// FortuneFiles are the fortune files read (nil: DefaultFortunes).
	FortuneFiles []string
	DocChars     int // documents are packed to about this many characters (0: 900)
	// DropOffensive leaves out every entry (an HH dialogue, a WordNet synset, a fortune) that
	// has a word of the List of Dirty, Naughty, Obscene and Otherwise Bad Words, as C4 was
	// filtered (lexicon.Offensive): a model cannot say what it never read.
	DropOffensive bool
	Seed          uint64
}

// DefaultFortunes are the files of Debian's fortunes package that are prose: the ASCII-art
// files and those built on ethnic or sexual stereotypes are left out.
var DefaultFortunes = []string{"computers", "cookie", "definitions", "education", "food", "fortunes",
	"goedel", "humorists", "kids", "law", "linux", "literature", "love", "magic", "medicine",
	"miscellaneous", "news", "paradoxum", "people", "pets", "platitudes", "pratchett", "riddles",
	"science", "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy"}

// CorpusStats counts what each source gave.
type CorpusStats struct {
	Source  string `json:"source"`
	Docs    int    `json:"docs"`
	Chars   int    `json:"chars"`
	Dropped int    `json:"dropped"` // entries left out by DropOffensive
}

// Corpus writes the pre-training corpus as out ({"text"} JSONL, shuffled with o.Seed) and
// returns what each source contributed.
func Corpus(out string, o CorpusOptions) ([]CorpusStats, error) {
	if o.DocChars <= 0 {
		o.DocChars = 900
	}
	var docs []string
	var stats []CorpusStats
	// add filters a source's entries, then packs them (sep "") or repeats them as they are.
	add := func(source string, entries []string, sep string, repeat int) {
		st := CorpusStats{Source: source}
		if o.DropOffensive {
			entries = slices.DeleteFunc(entries, func(e string) bool {
				if lexicon.Offensive(e) {
					st.Dropped++
					return true
				}
				return false
			})
		}
		ds := entries
		if sep != "" {
			ds = pack(entries, o.DocChars, sep)
		}
		for range repeat {
			for _, d := range ds {
				st.Docs++
				st.Chars += len(d)
			}
			docs = append(docs, ds...)
		}
		stats = append(stats, st)
	}
	if len(o.HH) > 0 {
		ts, err := Texts(o.HH)
		if err != nil {
			return nil, err
		}
		add("hh-rlhf", ts, "", max(o.HHRepeat, 1))
	}
	if o.WordNet != "" {
		es, err := wordNet(o.WordNet)
		if err != nil {
			return nil, err
		}
		add("wordnet", es, "\n", 1)
	}
	if o.Fortunes != "" {
		names := o.FortuneFiles
		if names == nil {
			names = DefaultFortunes
		}
		es, err := fortunes(o.Fortunes, names)
		if err != nil {
			return nil, err
		}
		add("fortunes", es, "\n\n", 1)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("corpus %s: no source given", out)
	}
	r := rand.New(rand.NewPCG(o.Seed, 7))
	r.Shuffle(len(docs), func(i, j int) { docs[i], docs[j] = docs[j], docs[i] })
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	return stats, files.WriteAtomic(out, func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		for _, d := range docs {
			if err := enc.Encode(map[string]string{"text": d}); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}

// pack joins entries into documents of about n characters.
func pack(entries []string, n int, sep string) []string {
	var docs []string
	var b strings.Builder
	for _, e := range entries {
		if b.Len() > 0 && b.Len()+len(e) > n {
			docs = append(docs, b.String())
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteString(sep)
		}
		b.WriteString(e)
	}
	if b.Len() > 0 {
		docs = append(docs, b.String())
	}
	return docs
}

// wordNet turns every synset of a WordNet 3.0 database into a sentence, "word (also w2): gloss.
// "Example."", in the database's order, so neighbouring entries share a topic.
func wordNet(dir string) ([]string, error) {
	var entries []string
	for _, pos := range []string{"noun", "verb", "adj", "adv"} {
		path := filepath.Join(dir, "data."+pos)
		f, err := files.Open(path)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for line := 1; sc.Scan(); line++ {
			l := sc.Text()
			if strings.HasPrefix(l, "  ") {
				continue // the licence header
			}
			e, err := synset(l)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: line %d: %w", path, line, err)
			}
			entries = append(entries, e)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return entries, nil
}

// synset renders one line of a WordNet data file (wndb(5)).
func synset(l string) (string, error) {
	head, gloss, ok := strings.Cut(l, " | ")
	if !ok {
		return "", fmt.Errorf("no gloss")
	}
	f := strings.Fields(head)
	if len(f) < 6 {
		return "", fmt.Errorf("short synset header")
	}
	var count int
	if _, err := fmt.Sscanf(f[3], "%x", &count); err != nil || count < 1 || len(f) < 4+2*count {
		return "", fmt.Errorf("bad word count %q", f[3])
	}
	var words []string
	for i := range count {
		w := strings.ReplaceAll(f[4+2*i], "_", " ")
		if j := strings.IndexByte(w, '('); j > 0 { // adjective markers such as "(a)"
			w = w[:j]
		}
		words = append(words, w)
	}
	var defs, examples []string
	for _, part := range strings.Split(strings.TrimSpace(gloss), "; ") {
		part = strings.TrimSpace(part)
		if strings.HasPrefix(part, `"`) {
			examples = append(examples, strings.Trim(part, `"`))
		} else if part != "" {
			defs = append(defs, part)
		}
	}
	var b strings.Builder
	b.WriteString(words[0])
	if len(words) > 1 {
		b.WriteString(" (also " + strings.Join(words[1:], ", ") + ")")
	}
	b.WriteString(": " + strings.Join(defs, "; ") + ".")
	for _, e := range examples {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		b.WriteString(" " + strings.ToUpper(e[:1]) + e[1:])
		if !strings.ContainsAny(e[len(e)-1:], ".!?") {
			b.WriteString(".")
		}
	}
	return b.String(), nil
}

// fortunes reads fortune files (entries separated by "%" lines) and keeps the prose ones (no
// tabs-and-art, at most 600 characters).
func fortunes(dir string, names []string) ([]string, error) {
	var entries []string
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	for _, name := range sorted {
		b, err := files.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		for _, e := range strings.Split(string(b), "\n%\n") {
			e = strings.TrimSpace(strings.TrimPrefix(e, "%\n"))
			if e == "" || len(e) > 600 || strings.Contains(e, "  |") || strings.Count(e, "_") > 4 {
				continue
			}
			entries = append(entries, strings.ReplaceAll(e, "\t", " "))
		}
	}
	return entries, nil
}
