package eval

import (
	"math"
	"strings"
	"testing"
)

// The example of sacreBLEU's README: "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio =
// 0.944 hyp_len = 17 ref_len = 18)".
func TestCorpusBLEUSacreBLEUExample(t *testing.T) {
	refs := [][]string{{"The dog bit the man.", "The dog had bit the man."}, {"It was not unexpected.", "No one was surprised."},
		{"The man bit him first.", "The man had bitten the dog."}}
	hyps := []string{"The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."}
	var s BLEUStats
	for i, h := range hyps {
		var rt [][]string
		for _, r := range refs[i] {
			rt = append(rt, Tokenize13a(r))
		}
		s.Add(Tokenize13a(h), rt)
	}
	if s.HypLen != 17 || s.RefLen != 18 {
		t.Fatalf("lengths %d/%d, want 17/18", s.HypLen, s.RefLen)
	}
	for n, want := range []float64{82.4, 50.0, 45.5, 37.5} {
		if got := 100 * float64(s.Matches[n]) / float64(s.Totals[n]); math.Abs(got-want) > 0.05 {
			t.Errorf("%d-gram precision %.1f, want %.1f", n+1, got, want)
		}
	}
	if got := CorpusBLEU(hyps, refs); math.Abs(got-48.53) > 0.005 {
		t.Fatalf("BLEU %.4f, want 48.53", got)
	}
}

func TestBLEUCases(t *testing.T) {
	// Papineni et al. 2002: "the the the ..." gets modified unigram precision 2/7.
	var s BLEUStats
	s.Add(strings.Fields("the the the the the the the"), [][]string{strings.Fields("the cat is on the mat"), strings.Fields("there is a cat on the mat")})
	if s.Matches[0] != 2 || s.Totals[0] != 7 {
		t.Fatalf("modified precision %d/%d, want 2/7", s.Matches[0], s.Totals[0])
	}
	if got := CorpusBLEU([]string{"a cat sat on the mat today"}, [][]string{{"a cat sat on the mat today"}}); math.Abs(got-100) > 1e-9 {
		t.Fatalf("identical: %v", got)
	}
	// A correct but short hypothesis is penalised: 4 of 8 tokens, BP = exp(1 - 8/4).
	got := CorpusBLEU([]string{"one two three four"}, [][]string{{"one two three four five six seven eight"}})
	if math.Abs(got-100*math.Exp(-1)) > 1e-9 {
		t.Fatalf("brevity penalty: %v", got)
	}
	if got := CorpusBLEU([]string{"nothing matches here at all"}, [][]string{{"completely different words in it"}}); got != 0 {
		t.Fatalf("no match: %v", got)
	}
	if toks := strings.Join(Tokenize13a("It wasn't 3.5-4, ok."), " "); toks != "It wasn't 3.5 - 4 , ok ." {
		t.Fatalf("13a: %q", toks)
	}
}
