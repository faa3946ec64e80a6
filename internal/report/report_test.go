package report

import (
	"encoding/json"
	"fmt"
	stdhtml "html"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/cyclealign/cyclealign/internal/cycle"
)

func fakeRun(t *testing.T, steps int) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, cycle.ConfigFile), []byte("method: cyclealign\nsteps: 3\n"), 0o644)
	var ms, js strings.Builder
	for s := 1; s <= steps; s++ {
		m := cycle.StepMetrics{Step: s, Loss: 3 - 0.5*float64(s), RankTerm: 1, SFTTerm: 2, AgreementRate: 0.2 * float64(s),
			MeanAgreement: 2 + 0.3*float64(s), AgreementByIter: []float64{0.1, 0.3}, MeanAByIter: []float64{2, 2.5}, PoolSize: s, Ranked: 4, Unranked: 1,
			CostTotal: 0.01 * float64(s), Eval: map[string]float64{"reward": float64(s)}}
		b, _ := json.Marshal(m)
		ms.Write(append(b, '\n'))
		r := cycle.Record{Step: s, Interaction: 1, Prompt: "\n\nHuman: <b>hi</b> & bye\n\nAssistant:", Candidates: []string{"a", "b"},
			WhiteRanking: []int{1, 0}, BlackRanking: []int{0, 1}, Agreement: []int{0}}
		b, _ = json.Marshal(r)
		js.Write(append(b, '\n'))
	}
	os.WriteFile(filepath.Join(dir, cycle.MetricsFile), []byte(ms.String()), 0o644)
	os.WriteFile(filepath.Join(dir, cycle.JournalFile), []byte(js.String()), 0o644)
	return dir
}

// wellFormed checks that every non-void element is closed in order.
func wellFormed(t *testing.T, page string) {
	void := map[string]bool{"meta": true, "br": true, "img": true, "link": true, "hr": true, "input": true}
	z := html.NewTokenizer(strings.NewReader(page))
	var stack []string
	for {
		switch z.Next() {
		case html.ErrorToken:
			if len(stack) != 0 {
				t.Fatalf("unclosed elements %v", stack)
			}
			return
		case html.StartTagToken:
			name, _ := z.TagName()
			if !void[string(name)] {
				stack = append(stack, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				t.Fatalf("</%s> closes %v", name, stack)
			}
			stack = stack[:len(stack)-1]
		}
	}
}

func TestReportHTML(t *testing.T) {
	r, err := Load(fakeRun(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	page := r.HTML()
	wellFormed(t, page)
	for _, title := range []string{"Loss", "Loss over wall-clock time", "Learning rate", "Gradient norm (before clipping)", "Throughput (tokens/s)",
		"Agreement rate (|A| ≥ τ)", "Mean agreement length |A|", "Demonstration pool size", "Unranked rate", "API cost (USD, cumulative)", "Held-out evaluation reward"} {
		if !strings.Contains(page, ">"+stdhtml.EscapeString(title)+"</text>") {
			t.Errorf("plot %q missing", title)
		}
	}
	if n := strings.Count(page, "<svg"); n != 11 {
		t.Fatalf("%d plots", n)
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "src=") || strings.Contains(page, "href=") || strings.Contains(page, "@import") || strings.Contains(page, "<?xml") {
		t.Fatal("the report loads something from outside")
	}
	if !strings.Contains(page, "&lt;b&gt;hi&lt;/b&gt; &amp; bye") || !strings.Contains(page, "method: cyclealign") {
		t.Fatal("sample table or configuration missing or unescaped")
	}
	// Legends sit below the plots, one entry per series; rankings show the candidates' texts.
	for _, name := range []string{"loss</span>", "rank term</span>", "SFT term</span>", "interaction 2</span>"} {
		if !strings.Contains(page, name) {
			t.Errorf("legend entry %q missing", name)
		}
	}
	if !strings.Contains(page, "1. [0] a\n2. [1] b") || !strings.Contains(page, "1. [1] b\n2. [0] a") {
		t.Fatal("rankings are not shown with the candidates' texts")
	}
}

// TestIntegerStepTicksAndNonNegativeAxes: step axes are labelled with whole numbers only, and a
// count that never moves from 0 is drawn on [0, 1], not around 0.
func TestIntegerStepTicksAndNonNegativeAxes(t *testing.T) {
	for _, tk := range (integerTicks{}).Ticks(0.7, 3.2) {
		if tk.Value != math.Trunc(tk.Value) {
			t.Fatalf("tick %v on a step axis", tk.Value)
		}
	}
	if n := len((integerTicks{}).Ticks(1, 300)); n > 11 || n < 5 {
		t.Fatalf("%d ticks for 300 steps", n)
	}
	page := Chart{Title: "Cost", XLabel: "step", NonNegative: true, IntegerX: true, Series: []Series{{Name: "cost", X: []float64{1, 2, 3}, Y: []float64{0, 0, 0}}}}.HTML()
	if strings.Contains(page, ">-") || strings.Contains(page, ">−") {
		t.Fatal("a non-negative axis shows negative ticks")
	}
}

// TestTrainDirectoryReport: a train output directory (metrics only) gets a report too.
func TestTrainDirectoryReport(t *testing.T) {
	dir := t.TempDir()
	var ms strings.Builder
	for s := 1; s <= 5; s++ {
		fmt.Fprintf(&ms, `{"step":%d,"epoch":0,"loss":%g,"rank_term":1,"sft_term":2,"grad_norm":0.5,"lr":1e-5,"tokens":512,"tokens_per_s":900,"seconds":0.6}`+"\n", s, 3-0.1*float64(s))
	}
	os.WriteFile(filepath.Join(dir, cycle.MetricsFile), []byte(ms.String()), 0o644)
	r, err := Load(dir)
	if err != nil || !r.Train {
		t.Fatalf("train directory: %v %+v", err, r)
	}
	page := r.HTML()
	wellFormed(t, page)
	if !strings.Contains(page, "Training run") || strings.Count(page, "<svg") != 5 || strings.Contains(page, "Demonstration pool") {
		t.Fatalf("train report: %d plots", strings.Count(page, "<svg"))
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a run directory") {
		t.Fatalf("empty directory: %v", err)
	}
}

func TestCompare(t *testing.T) {
	a, _ := Load(fakeRun(t, 3))
	b, _ := Load(fakeRun(t, 5))
	table, page := Compare([]*Run{a, b})
	if strings.Count(table, "\n") != 3 || !strings.Contains(table, "5.0000") {
		t.Fatalf("table:\n%s", table)
	}
	wellFormed(t, page)
	if strings.Count(page, "<svg") != 2 {
		t.Fatal("comparison plots missing")
	}
}

// TestUnrankedBanner: a run whose prompts mostly came back unranked says so at the top.
func TestUnrankedBanner(t *testing.T) {
	dir := fakeRun(t, 3)
	r, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.HTML(), "Most prompts came back unranked") {
		t.Fatal("banner shown for a run whose prompts were mostly ranked")
	}
	for i := range r.Metrics {
		r.Metrics[i].Ranked, r.Metrics[i].Unranked = 1, 4
	}
	page := r.HTML()
	if !strings.Contains(page, "Most prompts came back unranked</b> (12 of 15)") || !strings.Contains(page, "raw_replies") {
		t.Fatal("no banner for a run whose prompts were mostly unranked")
	}
	wellFormed(t, page)
}
