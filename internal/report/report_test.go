package report

import (
	"encoding/json"
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
	for _, title := range []string{"Loss", "Agreement rate", "Mean agreement length", "Demonstration pool size", "Unranked rate", "API cost", "Held-out evaluation reward"} {
		if !strings.Contains(page, `aria-label="`+title) {
			t.Errorf("plot %q missing", title)
		}
	}
	if n := strings.Count(page, "<svg"); n != 7 {
		t.Fatalf("%d plots", n)
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "src=") || strings.Contains(page, "href=") || strings.Contains(page, "@import") {
		t.Fatal("the report loads something from outside")
	}
	if !strings.Contains(page, "&lt;b&gt;hi&lt;/b&gt; &amp; bye") || !strings.Contains(page, "method: cyclealign") {
		t.Fatal("sample table or configuration missing or unescaped")
	}
	// The loss series has one point per step.
	if strings.Count(page, `r="2.2" fill="#1f77b4"`) < 4 {
		t.Fatal("loss curve lacks points")
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
