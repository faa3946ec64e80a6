package generate

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/cyclealign/cyclealign/internal/model"
)

var refModels = []string{"tiny-gpt2-bytelevel", "tiny-llama-metaspace"}

func load(t *testing.T, name string) *model.Model {
	t.Helper()
	b, err := model.NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(b, filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func greedy(n int) Options {
	return Options{N: 1, MaxNewTokens: n, Greedy: true, IgnoreEOS: true, TopP: 1}
}

func TestGreedyMatchesHF(t *testing.T) {
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			b, err := os.ReadFile(filepath.Join("..", "..", "testdata", name, "reference.json"))
			if err != nil {
				t.Fatal(err)
			}
			var ref struct {
				Generate []struct {
					PromptIDs []int `json:"prompt_ids"`
					Greedy16  []int `json:"greedy16"`
				} `json:"generate"`
			}
			if err := json.Unmarshal(b, &ref); err != nil {
				t.Fatal(err)
			}
			var prompts [][]int
			for _, g := range ref.Generate {
				prompts = append(prompts, g.PromptIDs)
			}
			// All reference prompts in one left-padded batch, then each alone, with and
			// without the cache: every run must give HF's 16 tokens.
			for _, noCache := range []bool{false, true} {
				opt := greedy(16)
				opt.NoCache = noCache
				batch, err := IDs(context.Background(), m, prompts, opt)
				if err != nil {
					t.Fatal(err)
				}
				for i, g := range ref.Generate {
					if !slices.Equal(batch[i][0].IDs, g.Greedy16) {
						t.Errorf("noCache=%v prompt %d: got %v, HF %v", noCache, i, batch[i][0].IDs, g.Greedy16)
					}
					alone, err := IDs(context.Background(), m, [][]int{g.PromptIDs}, opt)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(alone[0][0].IDs, g.Greedy16) {
						t.Errorf("alone noCache=%v prompt %d: got %v, HF %v", noCache, i, alone[0][0].IDs, g.Greedy16)
					}
				}
			}
		})
	}
}

// TestCacheEqualsFullForward feeds a sequence through the cached decoder one token at a time
// (after a left-padded prefill shared with a longer prompt) and compares every step's logits
// with a full forward pass over the same tokens.
func TestCacheEqualsFullForward(t *testing.T) {
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			ctx := context.Background()
			short := m.Tokenizer.Encode("\n\nHuman: Hi\n\nAssistant:", true)
			long := m.Tokenizer.Encode("\n\nHuman: What should I cook for dinner tonight?\n\nAssistant:", true)
			cont := m.Tokenizer.Encode(" Maybe some pasta with tomato sauce", false)
			dec, err := m.NewDecoder([][]int{short, long}, len(cont), true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dec.Start()
			if err != nil {
				t.Fatal(err)
			}
			full, err := m.Logits(ctx, [][]int{append(append([]int(nil), short...), cont...), append(append([]int(nil), long...), cont...)})
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for step := 0; ; step++ {
				for r, p := range [][]int{short, long} {
					want := full[r][len(p)-1+step]
					for v := range want {
						worst = math.Max(worst, math.Abs(float64(got[r][v]-want[v])))
					}
				}
				if step == len(cont)-1 {
					break
				}
				if got, err = dec.Step([]int{cont[step], cont[step]}); err != nil {
					t.Fatal(err)
				}
			}
			if worst > 1e-4 {
				t.Fatalf("cached decoding differs from the full forward pass by %.2e", worst)
			}
			t.Logf("max |cached - full| logit difference: %.2e", worst)
		})
	}
}

func TestScoringIsBatchInvariant(t *testing.T) {
	m := load(t, "tiny-llama-metaspace")
	ctx := context.Background()
	a := m.Tokenizer.Encode("\n\nHuman: Why is the sky blue?\n\nAssistant: Because of Rayleigh scattering.", true)
	others := [][]int{
		m.Tokenizer.Encode("short", true),
		m.Tokenizer.Encode("\n\nHuman: a much longer conversation turn that forces a wider padded batch than the first one does, surely\n\nAssistant: yes", true),
	}
	alone, err := m.LogProbs(ctx, [][]int{a})
	if err != nil {
		t.Fatal(err)
	}
	mixed, err := m.LogProbs(ctx, [][]int{others[0], a, others[1]})
	if err != nil {
		t.Fatal(err)
	}
	for i := range alone[0] {
		if d := math.Abs(float64(alone[0][i] - mixed[1][i])); d > 1e-5 {
			t.Fatalf("token %d: alone %.7f, in a padded batch %.7f", i, alone[0][i], mixed[1][i])
		}
	}
}

func TestSamplingIsSeededAndStops(t *testing.T) {
	m := load(t, "tiny-gpt2-bytelevel")
	ctx := context.Background()
	opt := Defaults()
	opt.N, opt.MaxNewTokens, opt.Seed = 3, 24, 7
	opt.Stop = nil
	a, err := Text(ctx, m, []string{"\n\nHuman: Hello\n\nAssistant:", "\n\nHuman: Bye\n\nAssistant:"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Text(ctx, m, []string{"\n\nHuman: Hello\n\nAssistant:", "\n\nHuman: Bye\n\nAssistant:"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	// Told after each batch of rows; batching changes neither the samples nor the count.
	var told [][2]int
	opt.MaxRows, opt.Progress = 4, func(done, total int) { told = append(told, [2]int{done, total}) }
	c, err := Text(ctx, m, []string{"\n\nHuman: Hello\n\nAssistant:", "\n\nHuman: Bye\n\nAssistant:"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][2]int{{4, 6}, {6, 6}}; !slices.Equal(told, want) {
		t.Fatalf("progress told %v, want %v", told, want)
	}
	opt.MaxRows, opt.Progress = 0, nil
	distinct := map[string]bool{}
	for i := range a {
		for j := range a[i] {
			if !slices.Equal(a[i][j].IDs, b[i][j].IDs) || !slices.Equal(a[i][j].IDs, c[i][j].IDs) {
				t.Fatalf("same seed, different samples: %v vs %v vs %v (batches of 4)", a[i][j].IDs, b[i][j].IDs, c[i][j].IDs)
			}
			distinct[a[i][j].Text] = true
		}
	}
	if len(distinct) < 4 {
		t.Fatalf("6 samples at temperature 1 gave only %d distinct texts", len(distinct))
	}
	// A stop string taken from a sample must cut that sample just before it.
	full := a[0][0]
	text := full.Text
	if len(text) < 6 {
		t.Skip("sample too short to carve a stop string from")
	}
	stop := text[3:6]
	opt.Stop = []string{stop}
	cut, err := Text(ctx, m, []string{"\n\nHuman: Hello\n\nAssistant:"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	got := cut[0][0]
	idx := len(text[:3])
	if got.Text != text[:idx] || got.FinishReason != "stop" {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, got.Text, got.FinishReason, text[:idx])
	}
	if dec := m.Tokenizer.Decode(got.IDs, true); len(dec) > len(got.Text) {
		t.Fatalf("ids decode to %q, longer than the cut text %q", dec, got.Text)
	}
}

func TestSampleTopKTopP(t *testing.T) {
	logits := []float32{0, 3, 1, 2} // probabilities ordered 1 > 3 > 2 > 0
	opt := Options{Temperature: 1, TopP: 1, TopK: 2}
	seen := map[int]int{}
	for s := uint64(0); s < 400; s++ {
		r := newRNG(s)
		seen[Sample(logits, r, opt)]++
	}
	if len(seen) != 2 || seen[1] == 0 || seen[3] == 0 {
		t.Fatalf("top-k 2 sampled %v, want only tokens 1 and 3", seen)
	}
	// softmax(0,3,1,2): p(1)=0.644, p(3)=0.237; top-p 0.6 keeps token 1 alone.
	opt = Options{Temperature: 1, TopP: 0.6}
	for s := uint64(0); s < 100; s++ {
		if tok := Sample(logits, newRNG(s), opt); tok != 1 {
			t.Fatalf("top-p 0.6 sampled %d", tok)
		}
	}
	// top-p 0.85 keeps tokens 1 and 3 (0.644+0.237 >= 0.85).
	seen = map[int]int{}
	opt.TopP = 0.85
	for s := uint64(0); s < 400; s++ {
		seen[Sample(logits, newRNG(s), opt)]++
	}
	if len(seen) != 2 || seen[1] == 0 || seen[3] == 0 {
		t.Fatalf("top-p 0.85 sampled %v, want tokens 1 and 3", seen)
	}
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

func TestBanRepeats(t *testing.T) {
	logits := []float32{0, 1, 2, 3, 4}
	// ids ... 1 2 3 ... 1 2: with n=3 the next 3 would repeat "1 2 3"; with n=2 the tail "2"
	// was followed by 3 and by 4.
	banRepeats(logits, []int{1, 2, 3, 0, 2, 4, 1, 2}, 3, nil)
	if !math.IsInf(float64(logits[3]), -1) || math.IsInf(float64(logits[4]), -1) || logits[2] != 2 {
		t.Fatalf("n=3: %v", logits)
	}
	logits = []float32{0, 1, 2, 3, 4}
	banRepeats(logits, []int{1, 2, 3, 0, 2, 4, 1, 2}, 2, nil)
	if !math.IsInf(float64(logits[3]), -1) || !math.IsInf(float64(logits[4]), -1) || logits[0] != 0 || logits[1] != 1 {
		t.Fatalf("n=2: %v", logits)
	}
	logits = []float32{0, 1, 2}
	banRepeats(logits, []int{1}, 3, nil) // too short to repeat anything
	if logits[1] != 1 {
		t.Fatalf("short: %v", logits)
	}
	// The turn's end stays open: the stop sequence 1 2 3 is in the prompt, and a completion
	// that has begun it ("1 2") may finish it, where plain HF rules would ban the 3.
	stop := [][]int{{1, 2, 3}}
	keep := stopContinuations([]int{4, 1, 2}, stop)
	if !slices.Equal(keep, []int{1, 3}) {
		t.Fatalf("continuations of 4 1 2 towards 1 2 3: %v, want [1 3]", keep)
	}
	logits = []float32{0, 1, 2, 3, 4}
	banRepeats(logits, []int{1, 2, 3, 0, 4, 1, 2}, 3, keep)
	if logits[3] != 3 {
		t.Fatalf("the stop sequence's last token was banned: %v", logits)
	}
	if keep := stopContinuations([]int{4, 1}, stop); !slices.Equal(keep, []int{1, 2}) {
		t.Fatalf("continuations of 4 1: %v, want [1 2]", keep)
	}
}

// TestSortedDescending: the radix sort orders as a stable comparison sort by logit, largest
// first: ties (many here), negatives, zeros of both signs and infinities included.
func TestSortedDescending(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	var smp sampler // one, its buffers reused from size to size
	for _, n := range []int{1, 2, 7, 2048, 151936, 100} {
		logits := make([]float32, n)
		for i := range logits {
			switch r.IntN(6) {
			case 0:
				logits[i] = float32(r.IntN(5)) - 2 // ties
			case 1:
				logits[i] = float32(math.Inf(-1))
			case 2:
				logits[i] = float32(math.Copysign(0, -1))
			default:
				logits[i] = float32(r.NormFloat64() * 10)
			}
		}
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		sort.SliceStable(want, func(a, b int) bool { return logits[want[a]] > logits[want[b]] })
		got := smp.sortedDescending(logits)
		if !slices.EqualFunc(got, want, func(a int32, b int) bool { return int(a) == b }) {
			t.Fatalf("n=%d: order differs from a stable sort's", n)
		}
	}
}

func BenchmarkSample152k(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, 151936)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	opt := Defaults()
	var smp sampler // as a decoding row keeps it
	for i := 0; i < b.N; i++ {
		smp.sample(logits, r, opt)
	}
}
