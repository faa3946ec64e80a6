package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"

	"github.com/cyclealign/cyclealign/internal/eval"
	"github.com/cyclealign/cyclealign/internal/hf"
)

// TestDemoSmall runs the reduced demo on the embedded default with the judge behind the
// loopback OpenAI-compatible server, and checks that every phase ran: the base's evaluation,
// CycleAlign, the matched control, their evaluations, and the judge check.
func TestDemoSmall(t *testing.T) {
	out := t.TempDir()
	res, err := Run(context.Background(), Options{Out: out, AssetsDir: t.TempDir(), Small: true, JudgeServer: true, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Base.Reward == nil || res.Base.PreferenceAccuracy == nil || res.Base.Perplexity == nil || res.Base.BLEU == nil {
		t.Fatalf("base evaluation incomplete: %+v", res.Base)
	}
	if res.Aligned.Reward == nil || res.Aligned.WinRate == nil || res.Aligned.Wins+res.Aligned.Ties+res.Aligned.Losses != 2*res.Aligned.Prompts {
		t.Fatalf("aligned evaluation incomplete: %+v", res.Aligned)
	}
	if res.Control == nil || res.Control.WinRate == nil || !strings.Contains(res.Methods, "static-icl-matched") || !strings.Contains(res.Methods, "cyclealign") {
		t.Fatalf("control run missing from the methods table:\n%s", res.Methods)
	}
	jc := res.Judge
	if jc == nil || jc.HeldoutPairs == 0 || jc.DecidedPairs == 0 || jc.CriterionPairs == 0 || jc.Requests != res.Aligned.Prompts || jc.MeanDemos == 0 || jc.AgreeWith == 0 && jc.AgreeWithout == 0 {
		t.Fatalf("judge check incomplete: %+v", jc)
	}
	for _, m := range []string{"base", "cyclealign", "static-icl-matched"} {
		n := 0
		for _, k := range res.Classes[m] {
			n += k
		}
		if n != res.Aligned.Prompts || len(res.Classes[m]) != 4 {
			t.Fatalf("%s's replies classed %v, want the %d replies in 4 classes", m, res.Classes[m], res.Aligned.Prompts)
		}
	}
	if !strings.Contains(res.JudgeSummary, "by the judge's class") || !strings.Contains(res.JudgeSummary, "static-icl-matched") {
		t.Fatalf("judge summary lacks the class counts:\n%s", res.JudgeSummary)
	}
	// The shipped evaluator reads the human labels of held-out pairs it was not trained on
	// better than chance (0.647 when built); a broken or reversed reward model does not.
	if !strings.Contains(res.Evaluator, "reward model") || jc.EvaluatorVsHuman < 0.58 {
		t.Fatalf("evaluator %q prefers the human-chosen held-out reply in %.3f of %d pairs", res.Evaluator, jc.EvaluatorVsHuman, jc.HeldoutPairs)
	}
	if res.Base.DistinctBigrams <= 0 || res.Base.Unique <= 0 {
		t.Fatalf("diversity not measured: %+v", res.Base)
	}
	if _, err := os.Stat(filepath.Join(out, ControlDir, "model", "model.safetensors")); err != nil {
		t.Fatalf("control run directory: %v", err)
	}
	for _, row := range []string{"mean reward", "win rate vs baseline", "preference accuracy", "distinct bigrams"} {
		if !strings.Contains(res.Table, row) {
			t.Fatalf("table lacks %q:\n%s", row, res.Table)
		}
	}
	for _, m := range []string{"cyclealign", "static-icl-matched"} {
		if !strings.Contains(res.Verdict, "verdict: "+m+" wins ") {
			t.Fatalf("no verdict on %s:\n%s", m, res.Verdict)
		}
	}
	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil || !strings.Contains(string(page), "Held-out evaluation, before and after") || !strings.Contains(string(page), "win rate vs baseline") ||
		!strings.Contains(string(page), "matched control") || !strings.Contains(string(page), "changed") || !strings.Contains(string(page), "verdict: cyclealign") {
		t.Fatalf("the demo's report.html lacks the before/after table (%v)", err)
	}
	for _, f := range []string{"config.yaml", "journal.jsonl", "metrics.jsonl", "pool.json", "model/model.safetensors", "demo.json", "report.html"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
	// model/ holds the float32 weights the tables evaluated, not their bf16 rounding.
	saved, err := hf.ReadModelTensors(filepath.Join(out, "model"))
	if err != nil {
		t.Fatal(err)
	}
	finer := 0
	for n, x := range saved {
		if x.Stored != hf.F32 {
			t.Fatalf("model/ tensor %s saved as %s, want F32", n, x.Stored)
		}
		for _, v := range x.Data {
			if bfloat16.FromFloat32(v).Float32() != v {
				finer++
			}
		}
	}
	if finer == 0 {
		t.Fatal("model/ holds only bf16 values: the float32 update was rounded away")
	}
	j, _ := os.ReadFile(filepath.Join(out, "journal.jsonl"))
	if strings.Count(string(j), "\n") != 2*2*2 || !strings.Contains(string(j), `"request_ids"`) {
		t.Fatalf("journal: %d records", strings.Count(string(j), "\n"))
	}
}

// A negative setting is refused by name before anything is unpacked or written (each used to
// fall back to its default in silence).
func TestNegativeOptionsRefused(t *testing.T) {
	for name, o := range map[string]Options{"steps -2": {Steps: -2}, "learning rate -1": {LR: -1}, "demo weight -1": {DemoWeight: -1}} {
		o.Out, o.AssetsDir = filepath.Join(t.TempDir(), "run"), filepath.Join(t.TempDir(), "assets")
		if _, err := Run(context.Background(), o); err == nil || !strings.HasPrefix(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming it", name, err)
		}
		if _, err := os.Stat(o.AssetsDir); err == nil {
			t.Errorf("%s: assets unpacked before the options were checked", name)
		}
	}
}

// A gain is claimed only when the whole interval lies above 1/2.
func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		iv   eval.Interval
		want string
	}{
		{eval.Interval{Mean: 0.56, Lo: 0.51, Hi: 0.61}, "a measured gain over the base"},
		{eval.Interval{Mean: 0.53, Lo: 0.44, Hi: 0.61}, "no measured difference from the base"},
		{eval.Interval{Mean: 0.5, Lo: 0.5, Hi: 0.58}, "no measured difference from the base"},
		{eval.Interval{Mean: 0.39, Lo: 0.31, Hi: 0.47}, "a measured loss against the base"},
	} {
		iv := c.iv
		v := verdict([]string{"cyclealign"}, []*eval.Report{{WinRate: &iv}})
		if !strings.HasPrefix(v, fmt.Sprintf("verdict: cyclealign wins %.3f [%.3f, %.3f]", iv.Mean, iv.Lo, iv.Hi)) || !strings.Contains(v, c.want) {
			t.Errorf("%+v: %q, want %q", iv, v, c.want)
		}
	}
}

// A cache directory that cannot be written is named, with the flag that moves it.
func TestUnpackFailureNamesTheDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o644)
	dir := filepath.Join(file, "default") // under a file: no directory can be made there
	_, err := Run(context.Background(), Options{Out: filepath.Join(t.TempDir(), "run"), AssetsDir: dir, Small: true})
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "--assets") {
		t.Fatalf("unwritable assets directory: %v, want an error naming it and --assets", err)
	}
}
