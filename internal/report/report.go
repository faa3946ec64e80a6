package report

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"

	"github.com/cyclealign/cyclealign/internal/cycle"
	"github.com/cyclealign/cyclealign/internal/files"
)

// Run is a run directory's records: of align (config, metrics and journal) or of train
// (metrics only; its lines share align's field names).
type Run struct {
	Dir     string
	Train   bool // an offline training run (cyclealign train)
	Config  string
	Metrics []cycle.StepMetrics
	Journal []cycle.Record
	// Evaluation is a held-out evaluation table to show (the demo's before/after table, read
	// from its DemoFile); "" for none. Methods (CycleAlign against its control), Verdict (what
	// the win rates' intervals show) and Judge (the judge's measurement) come from the same file.
	Evaluation, Methods, Verdict, Judge string
}

// DemoFile is where cyclealign demo leaves its results, {"table": ...} among them.
const DemoFile = "demo.json"

// Load reads a run directory of align or of train.
func Load(dir string) (*Run, error) {
	r := &Run{Dir: dir}
	b, err := files.ReadFile(filepath.Join(dir, cycle.ConfigFile))
	switch {
	case err == nil:
		r.Config = string(b)
	case errors.Is(err, os.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(dir, cycle.MetricsFile)); serr != nil {
			return nil, fmt.Errorf("%s is not a run directory (no %s or %s)", dir, cycle.ConfigFile, cycle.MetricsFile)
		}
		r.Train = true
	default:
		return nil, err
	}
	if err := readJSONL(filepath.Join(dir, cycle.MetricsFile), &r.Metrics); err != nil {
		return nil, err
	}
	if r.Train {
		return r, nil
	}
	if err := readJSONL(filepath.Join(dir, cycle.JournalFile), &r.Journal); err != nil {
		return nil, err
	}
	if b, err := files.ReadFile(filepath.Join(dir, DemoFile)); err == nil {
		var d struct {
			Table   string `json:"table"`
			Methods string `json:"methods"`
			Verdict string `json:"verdict"`
			Judge   string `json:"judge_summary"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, DemoFile), err)
		}
		r.Evaluation, r.Methods, r.Verdict, r.Judge = d.Table, d.Methods, d.Verdict, d.Judge
	}
	return r, nil
}

func readJSONL[T any](path string, out *[]T) error {
	f, err := files.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for n := 1; sc.Scan(); n++ {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return fmt.Errorf("%s: line %d: %w", path, n, err)
		}
		*out = append(*out, v)
	}
	return sc.Err()
}

func (r *Run) series(name string, get func(m cycle.StepMetrics) (float64, bool)) Series {
	s := Series{Name: name}
	for _, m := range r.Metrics {
		if v, ok := get(m); ok {
			s.X, s.Y = append(s.X, float64(m.Step)), append(s.Y, v)
		}
	}
	return s
}

func always(f func(m cycle.StepMetrics) float64) func(cycle.StepMetrics) (float64, bool) {
	return func(m cycle.StepMetrics) (float64, bool) { return f(m), true }
}

// wallClock is the series against elapsed time (the sum of step times), in minutes, or in
// seconds for a run shorter than two minutes; it returns the unit.
func (r *Run) wallClock(name string, get func(m cycle.StepMetrics) float64) (Series, string) {
	s := Series{Name: name}
	total := 0.0
	for _, m := range r.Metrics {
		total += m.Seconds
	}
	unit, div := "minutes", 60.0
	if total < 120 {
		unit, div = "seconds", 1
	}
	el := 0.0
	for _, m := range r.Metrics {
		el += m.Seconds
		s.X, s.Y = append(s.X, el/div), append(s.Y, get(m))
	}
	return s, unit
}

// Plots are the report's charts.
func (r *Run) Plots() []string {
	loss := []Series{
		r.series("loss", always(func(m cycle.StepMetrics) float64 { return m.Loss })),
		r.series("rank term", always(func(m cycle.StepMetrics) float64 { return m.RankTerm })),
		r.series("SFT term", always(func(m cycle.StepMetrics) float64 { return m.SFTTerm }))}
	wall, unit := r.wallClock("loss", func(m cycle.StepMetrics) float64 { return m.Loss })
	charts := []Chart{
		{Title: "Loss", XLabel: "step", Series: loss, IntegerX: true},
		{Title: "Loss over wall-clock time", XLabel: unit, Series: []Series{wall}},
		{Title: "Learning rate", XLabel: "step", IntegerX: true, NonNegative: true, Series: []Series{
			r.series("learning rate", always(func(m cycle.StepMetrics) float64 { return m.LR }))}},
		{Title: "Gradient norm (before clipping)", XLabel: "step", IntegerX: true, NonNegative: true, Series: []Series{
			r.series("global norm", always(func(m cycle.StepMetrics) float64 { return m.GradNorm }))}},
		{Title: "Throughput (tokens/s)", XLabel: "step", IntegerX: true, NonNegative: true, Series: []Series{
			r.series("tokens/s", always(func(m cycle.StepMetrics) float64 { return m.TokensPerSec }))}},
	}
	if r.Train {
		return render(charts)
	}
	var byIter, aByIter []Series
	T := 0
	for _, m := range r.Metrics {
		T = max(T, len(m.AgreementByIter))
	}
	for t := 0; t < T; t++ {
		byIter = append(byIter, r.series(fmt.Sprintf("interaction %d", t+1), func(m cycle.StepMetrics) (float64, bool) {
			if t < len(m.AgreementByIter) {
				return m.AgreementByIter[t], true
			}
			return 0, false
		}))
		aByIter = append(aByIter, r.series(fmt.Sprintf("interaction %d", t+1), func(m cycle.StepMetrics) (float64, bool) {
			if t < len(m.MeanAByIter) {
				return m.MeanAByIter[t], true
			}
			return 0, false
		}))
	}
	evalReward := r.series("held-out reward", func(m cycle.StepMetrics) (float64, bool) {
		v, ok := m.Eval["reward"]
		return v, ok
	})
	charts = append(charts,
		Chart{Title: "Agreement rate (|A| ≥ τ)", XLabel: "step", IntegerX: true, NonNegative: true, Series: append([]Series{
			r.series("all interactions", always(func(m cycle.StepMetrics) float64 { return m.AgreementRate }))}, byIter...)},
		Chart{Title: "Mean agreement length |A|", XLabel: "step", IntegerX: true, NonNegative: true, Series: append([]Series{
			r.series("all interactions", always(func(m cycle.StepMetrics) float64 { return m.MeanAgreement }))}, aByIter...)},
		Chart{Title: "Demonstration pool size", XLabel: "step", IntegerX: true, NonNegative: true, Series: []Series{
			r.series("pool", always(func(m cycle.StepMetrics) float64 { return float64(m.PoolSize) }))}},
		Chart{Title: "Unranked rate", XLabel: "step", IntegerX: true, NonNegative: true, Series: []Series{
			r.series("unranked", always(func(m cycle.StepMetrics) float64 {
				if m.Ranked+m.Unranked == 0 {
					return 0
				}
				return float64(m.Unranked) / float64(m.Ranked+m.Unranked)
			}))}},
		Chart{Title: "API cost (USD, cumulative)", XLabel: "step", IntegerX: true, NonNegative: true, Series: []Series{
			r.series("cost", always(func(m cycle.StepMetrics) float64 { return m.CostTotal }))}},
		Chart{Title: "Held-out evaluation reward", XLabel: "step", IntegerX: true, Series: []Series{evalReward}},
	)
	return render(charts)
}

func render(charts []Chart) []string {
	out := make([]string, len(charts))
	for i, c := range charts {
		out[i] = c.HTML()
	}
	return out
}

const style = `body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #ddd;background:#fff}
table{border-collapse:collapse;font-size:12px;margin-top:8px}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3}.banner{background:#fde8e8;border:1px solid #e0a0a0;padding:8px}pre{background:#f7f7f7;padding:10px;font-size:12px;overflow:auto}.c{white-space:pre-wrap;max-width:360px}`

// rankedCounts sums the ranked and unranked prompts over all steps.
func (r *Run) rankedCounts() (ranked, unranked int) {
	for _, m := range r.Metrics {
		ranked, unranked = ranked+m.Ranked, unranked+m.Unranked
	}
	return ranked, unranked
}

// HTML renders the report page.
func (r *Run) HTML() string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cyclealign run " + html.EscapeString(filepath.Base(r.Dir)) + "</title><style>" + style + "</style></head><body>\n")
	kind := "CycleAlign run"
	if r.Train {
		kind = "Training run"
	}
	fmt.Fprintf(&b, "<h1>%s: %s</h1>\n", kind, html.EscapeString(r.Dir))
	if n := len(r.Metrics); n > 0 {
		last := r.Metrics[n-1]
		fmt.Fprintf(&b, "<p>%d steps; last step: loss %.4f, agreement rate %.2f, mean |A| %.2f, pool %d, API cost $%.4f.</p>\n",
			n, last.Loss, last.AgreementRate, last.MeanAgreement, last.PoolSize, last.CostTotal)
	}
	if ranked, unranked := r.rankedCounts(); unranked > ranked {
		fmt.Fprintf(&b, "<p class=\"banner\"><b>Most prompts came back unranked</b> (%d of %d): the black-box's replies did not parse as rankings, so they taught nothing. Their text is in <code>raw_replies</code> in journal.jsonl.</p>\n",
			unranked, ranked+unranked)
	}
	if r.Evaluation != "" {
		b.WriteString("<h2>Held-out evaluation, before and after</h2>\n<pre>" + html.EscapeString(r.Evaluation) + "</pre>\n")
		if r.Methods != "" {
			b.WriteString("<h2>CycleAlign against the matched control (same optimiser steps)</h2>\n<pre>" + html.EscapeString(r.Methods) + "</pre>\n")
		}
		if r.Verdict != "" {
			b.WriteString("<pre>" + html.EscapeString(r.Verdict) + "</pre>\n")
		}
		if r.Judge != "" {
			b.WriteString("<h2>The judge and its demonstrations</h2>\n<pre>" + html.EscapeString(r.Judge) + "</pre>\n")
		}
	}
	b.WriteString("<h2>Curves</h2>\n<div class=\"plots\">\n")
	for _, p := range r.Plots() {
		b.WriteString(p + "\n")
	}
	b.WriteString("</div>\n")
	if !r.Train {
		b.WriteString("<h2>Sample prompts (last interaction of the last step)</h2>\n")
		b.WriteString(r.samplesTable(8))
		b.WriteString("<h2>Effective configuration</h2>\n<pre>" + html.EscapeString(r.Config) + "</pre>\n")
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

func (r *Run) samplesTable(k int) string {
	if len(r.Journal) == 0 {
		return "<p>No journal records.</p>"
	}
	// The last interaction of the last step: each prompt once, with its latest rankings.
	last, inter := r.Journal[len(r.Journal)-1].Step, r.Journal[len(r.Journal)-1].Interaction
	var b strings.Builder
	b.WriteString("<table><tr><th>prompt</th><th>white-box ranking, best first</th><th>black-box ranking, best first</th><th>agreement</th><th>pool</th></tr>\n")
	// A ranking is shown as its candidates' texts in order, each with its index.
	ranked := func(rec cycle.Record, order []int) string {
		var s strings.Builder
		for pos, i := range order {
			fmt.Fprintf(&s, "%d. [%d] %s\n", pos+1, i, clip(rec.Candidates[i], 160))
		}
		return s.String()
	}
	n := 0
	for _, rec := range r.Journal {
		if rec.Step != last || rec.Interaction != inter || n >= k {
			continue
		}
		n++
		black := ranked(rec, rec.BlackRanking)
		if rec.Unranked {
			black = "unranked; replies: " + clip(strings.Join(rec.RawReplies, " | "), 300)
		}
		fmt.Fprintf(&b, "<tr><td class=\"c\">%s</td><td class=\"c\">%s</td><td class=\"c\">%s</td><td>%v</td><td>%v</td></tr>\n",
			html.EscapeString(clip(strings.TrimSpace(rec.Prompt), 400)), html.EscapeString(ranked(rec, rec.WhiteRanking)), html.EscapeString(black), rec.Agreement, rec.EnteredPool)
	}
	b.WriteString("</table>\n")
	return b.String()
}

// clip shortens s to about n characters, marking the cut.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// Compare renders several runs side by side: a table of final numbers and one plot of the
// agreement rate and one of the held-out reward.
func Compare(runs []*Run) (table string, page string) {
	var t strings.Builder
	fmt.Fprintf(&t, "%-32s %6s %9s %10s %8s %6s %10s %12s\n", "run", "steps", "loss", "agreement", "mean|A|", "pool", "cost", "eval reward")
	var agree, reward []Series
	for _, r := range runs {
		name := filepath.Base(r.Dir)
		if len(r.Metrics) == 0 {
			fmt.Fprintf(&t, "%-32s (no steps)\n", name)
			continue
		}
		m := r.Metrics[len(r.Metrics)-1]
		ev := "-"
		for i := len(r.Metrics) - 1; i >= 0; i-- {
			if v, ok := r.Metrics[i].Eval["reward"]; ok {
				ev = fmt.Sprintf("%.4f", v)
				break
			}
		}
		fmt.Fprintf(&t, "%-32s %6d %9.4f %10.3f %8.2f %6d %10.4f %12s\n", name, m.Step, m.Loss, m.AgreementRate, m.MeanAgreement, m.PoolSize, m.CostTotal, ev)
		agree = append(agree, r.series(name, always(func(m cycle.StepMetrics) float64 { return m.AgreementRate })))
		reward = append(reward, r.series(name, func(m cycle.StepMetrics) (float64, bool) {
			v, ok := m.Eval["reward"]
			return v, ok
		}))
	}
	var p strings.Builder
	p.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cyclealign comparison</title><style>" + style + "</style></head><body>\n<h1>Run comparison</h1>\n<pre>" + html.EscapeString(t.String()) + "</pre>\n<div class=\"plots\">")
	p.WriteString(Chart{Title: "Agreement rate", XLabel: "step", Series: agree, IntegerX: true, NonNegative: true}.HTML() +
		Chart{Title: "Held-out evaluation reward", XLabel: "step", Series: reward, IntegerX: true}.HTML())
	p.WriteString("</div></body></html>\n")
	return t.String(), p.String()
}
