// Package demo runs CycleAlign end to end on the embedded default: the HH-RLHF sample and the
// base model the project pre-trained. The black-box is the harmless lexicon judge (decline
// first, then courtesy; moved by its demonstrations; directly, or behind a loopback
// OpenAI-compatible server); the evaluator, which alignment never sees, is a reward model
// learned from human preference labels. It aligns with CycleAlign and with the matched
// static-demonstration control, and measures how the judge's demonstrations move it.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cyclealign/cyclealign/internal/assets"
	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/cycle"
	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/eval"
	"github.com/cyclealign/cyclealign/internal/files"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/lexicon"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/progress"
	"github.com/cyclealign/cyclealign/internal/report"
	"github.com/gomlx/gomlx/backends"
)

// Options size the demo.
type Options struct {
	Out         string // run directory
	AssetsDir   string // where the embedded default is unpacked ("" = user cache)
	Model       string // a base model directory to use instead of the embedded one
	Small       bool   // a reduced run for CI: every phase, a few seconds each
	JudgeServer bool   // put the judge behind a loopback OpenAI-compatible server
	NoControl   bool   // skip the static-icl-matched control run
	Steps       int    // 0: the size's default
	BatchSize   int    // prompts a step; 0: the size's default
	EvalPrompts int    // 0: the size's default (every held-out prompt)
	Seed        uint64
	LR          float64 // 0: 7e-5
	Loss        string  // "": pro
	DemoWeight  float64 // 0: the judge's default (blackbox.DefaultOptions)
	// NoRepeatNGram is the evaluation's greedy decoding constraint (HF's no_repeat_ngram_size):
	// a model this small otherwise loops on one generic reply. Negative: plain greedy; 0: 3.
	NoRepeatNGram int
	Progress      io.Writer
}

// RewardModelDir is the evaluator's directory inside the unpacked default.
const RewardModelDir = "models/rm"

// EvaluatorName says what the demo's evaluator is.
const EvaluatorName = "Bradley–Terry reward model from the base model, trained on the human labels of the judge and evaluator parts (reward of prompt+reply)"

// Evaluator loads the demo's evaluator from the unpacked default dir: the reward model that
// scripts/make-assets.sh trains on the human-labelled pairs of the judge and evaluator parts
// (the lexicon judge needs no data of its own). Alignment never sees it.
func Evaluator(be backends.Backend, dir string) (*blackbox.RewardModel, error) {
	m, err := model.Load(be, filepath.Join(dir, RewardModelDir))
	if err != nil {
		return nil, fmt.Errorf("the demo's evaluator: %w", err)
	}
	return &blackbox.RewardModel{M: m, Name: RewardModelDir}, nil
}

// ControlDir is the control run's directory inside the demo's.
const ControlDir = "static-icl-matched"

// Result is what the demo measured.
type Result struct {
	Base    *eval.Report `json:"base"`
	Aligned *eval.Report `json:"aligned"`
	Control *eval.Report `json:"control,omitempty"` // static-icl-matched
	Judge   *JudgeCheck  `json:"judge"`
	// Evaluator says what scored the tables.
	Evaluator string `json:"evaluator"`
	Run       string `json:"run"`
	Table     string `json:"table"`   // base vs aligned
	Methods   string `json:"methods"` // CycleAlign vs the control, same optimiser steps
	// Classes counts each model's greedy replies by the judge criterion's class
	// (lexicon.Classify): "base", "cyclealign" and the control's method name.
	Classes map[string]map[string]int `json:"classes"`
	// JudgeSummary is Judge as text.
	JudgeSummary string `json:"judge_summary"`
	// Verdict says what the win rates' intervals show: a gain, a loss, or neither.
	Verdict string `json:"verdict"`
}

// JudgeCheck measures the offline judge on the held-out pairs (the judge as the run leaves
// it, with the demonstrations it would be sent, against its own criterion; the criterion
// against the evaluator and the human labels) and how the run's demonstrations move its
// rankings of sampled candidates (and whether they bring it closer to the evaluator).
type JudgeCheck struct {
	HeldoutPairs int `json:"heldout_pairs"`
	// CriterionPairs are the held-out pairs whose replies the criterion tells apart.
	CriterionPairs int `json:"criterion_pairs"`
	// JudgeVsCriterion is the judge's pairwise accuracy on its own criterion over those pairs,
	// each ranked with the demonstrations the finished run sends for its prompt.
	JudgeVsCriterion float64 `json:"judge_vs_criterion"`
	// CriterionVsHuman is how often, over those pairs, the criterion prefers the human-chosen
	// reply.
	CriterionVsHuman float64 `json:"criterion_vs_human"`
	// CriterionVsEvaluator is the pairwise agreement of the judge's criterion with the evaluator
	// on the held-out pairs where both prefer one reply (DecidedPairs).
	CriterionVsEvaluator float64 `json:"criterion_vs_evaluator"`
	DecidedPairs         int     `json:"decided_pairs"`
	// EvaluatorVsHuman is how often the evaluator prefers the human-chosen reply of a held-out
	// pair.
	EvaluatorVsHuman float64 `json:"evaluator_vs_human"`
	Requests         int     `json:"requests"`
	MeanDemos        float64 `json:"mean_demos"`
	// Changed is the fraction of rankings that differ with and without the demonstrations.
	Changed float64 `json:"changed"`
	// AgreeWithout and AgreeWith are the judge's pairwise agreement with the evaluator on the
	// candidate pairs the evaluator separates, without and with the demonstrations.
	AgreeWithout float64 `json:"agree_without"`
	AgreeWith    float64 `json:"agree_with"`
}

// classes counts r's replies by lexicon.Classify.
func classes(r *eval.Report) map[string]int {
	n := map[string]int{}
	for c := lexicon.Declines; c <= lexicon.Offends; c++ {
		n[c.String()] = 0
	}
	for _, s := range r.Samples {
		n[lexicon.Classify(s.Response).String()]++
	}
	return n
}

// Config returns the CycleAlign configuration the demo runs.
func Config(o Options, dir string) cycle.Config {
	c := cycle.Defaults()
	c.Model = filepath.Join(dir, "models", "base")
	if o.Model != "" {
		c.Model = o.Model
	}
	c.Out, c.Seed = o.Out, o.Seed
	c.Steps, c.BatchSize, c.N, c.Interactions, c.MaxNewTokens = 10, 4, 4, 3, 48
	// 1e-4 moves the judge's classes further, and the evaluator scored two seeds of three
	// below the base (0.39); see the README's seeds.
	c.LR, c.WarmupRatio, c.MaxResponse = 7e-5, 0.1, 64
	// The base is bf16, and at this learning rate a bf16 export loses about 15% of the update:
	// model/ is saved as the float32 weights the tables evaluate.
	c.SaveDType = "float32"
	if o.Small {
		c.Steps, c.BatchSize, c.N, c.Interactions, c.MaxNewTokens = 2, 2, 3, 2, 12
	}
	if o.Steps > 0 {
		c.Steps = o.Steps
	}
	if o.BatchSize > 0 {
		c.BatchSize = o.BatchSize
	}
	if o.LR > 0 {
		c.LR = o.LR
	}
	if o.Loss != "" {
		c.Loss = o.Loss
	}
	c.Blackbox.Lexicon = "harmless"
	if o.DemoWeight > 0 {
		c.Blackbox.DemoWeight = o.DemoWeight
	}
	return c.Effective()
}

// Run unpacks the default, evaluates the base model, aligns it with CycleAlign and with the
// control, and evaluates both.
func Run(ctx context.Context, o Options) (*Result, error) {
	for _, v := range []struct {
		name string
		v    float64
	}{{"steps", float64(o.Steps)}, {"batch size", float64(o.BatchSize)}, {"eval prompts", float64(o.EvalPrompts)},
		{"learning rate", o.LR}, {"demo weight", o.DemoWeight}} {
		if v.v < 0 {
			return nil, fmt.Errorf("%s %g: must not be negative", v.name, v.v)
		}
	}
	dir := o.AssetsDir
	if dir == "" {
		dir = assets.DefaultDir()
	}
	if _, err := assets.Unpack(dir); err != nil {
		return nil, fmt.Errorf("unpacking the embedded default into %s (--assets DIR puts it elsewhere): %w", dir, err)
	}
	pairs, skipped, err := data.ReadHH(filepath.Join(dir, assets.HHFile))
	if err != nil {
		return nil, err
	}
	sp := data.Split(pairs)
	slog.Info("embedded default", "pairs", len(pairs), "skipped", skipped, "align_prompts", len(sp.Align), "test_pairs", len(sp.Test))
	// A finished demo in the same directory is replaced; an interrupted one is resumed.
	if _, err := os.Stat(filepath.Join(o.Out, report.DemoFile)); err == nil {
		if err := os.RemoveAll(o.Out); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	cfg := Config(o, dir)
	cfg.Prompts = filepath.Join(o.Out, "prompts.jsonl")
	if err := writePrompts(cfg.Prompts, data.Prompts(sp.Align)); err != nil {
		return nil, err
	}
	if o.JudgeServer {
		url, stop, err := serveJudge(cfg.Blackbox)
		if err != nil {
			return nil, err
		}
		defer stop()
		cfg.Blackbox.URL, cfg.Blackbox.Model, cfg.Blackbox.Lexicon = url, "harmless-judge", ""
		slog.Info("judge behind a loopback OpenAI-compatible server", "url", url)
	}
	be, err := model.NewBackend()
	if err != nil {
		return nil, err
	}
	base, err := model.Load(be, cfg.Model)
	if err != nil {
		return nil, err
	}
	// Every held-out prompt by default: with 64 the 95% interval on a win rate is about
	// ±0.11 wide, with 150 ±0.08.
	nEval := len(sp.Test)
	if o.Small {
		nEval = 4
	}
	if o.EvalPrompts > 0 {
		nEval = o.EvalPrompts
	}
	test := sp.Test[:min(nEval, len(sp.Test))]
	noRepeat := o.NoRepeatNGram
	if noRepeat == 0 {
		noRepeat = 3
	}
	ev, err := Evaluator(be, dir)
	if err != nil {
		return nil, err
	}
	eo := eval.Options{RewardModel: ev, Prompts: data.Prompts(test), Pairs: test, MaxNewTokens: cfg.MaxNewTokens,
		NoRepeatNGram: max(noRepeat, 0), Seed: o.Seed, Progress: o.Progress}
	slog.Info("evaluating the base model", "prompts", len(test))
	eo.Model = base
	before, err := eval.Run(ctx, eo)
	if err != nil {
		return nil, err
	}
	res := &Result{Base: before, Run: o.Out, Evaluator: EvaluatorName}
	aligned, judge, err := align(ctx, cfg, eo, before, o.Progress, func(r *cycle.Runner) (*JudgeCheck, error) {
		return checkJudge(ctx, r, base, ev, sp.Test, eo.Prompts, cfg, o.Progress)
	})
	if err != nil {
		return nil, err
	}
	res.Aligned, res.Judge = aligned, judge
	names, reps := []string{"cyclealign"}, []*eval.Report{aligned}
	if !o.NoControl {
		cc := cfg
		cc.Method, cc.Out = cycle.StaticICLMatched, filepath.Join(o.Out, ControlDir)
		if res.Control, _, err = align(ctx, cc.Effective(), eo, before, o.Progress, nil); err != nil {
			return nil, err
		}
		names, reps = append(names, string(cycle.StaticICLMatched)), append(reps, res.Control)
	}
	res.Classes = map[string]map[string]int{"base": classes(before)}
	for i, n := range names {
		res.Classes[n] = classes(reps[i])
	}
	res.Table = eval.Table([]string{"base", "aligned"}, []*eval.Report{before, aligned})
	res.Methods = eval.Table(names, reps)
	res.JudgeSummary = res.Judge.Summary() + classesLine(res.Classes, append([]string{"base"}, names...))
	res.Verdict = verdict(names, reps)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(o.Out, report.DemoFile), b, 0o644); err != nil {
		return nil, err
	}
	// The run's report, with the before/after table at its top.
	rep, err := report.Load(o.Out)
	if err != nil {
		return nil, err
	}
	return res, files.WriteAtomic(filepath.Join(o.Out, "report.html"), func(w io.Writer) error {
		_, err := io.WriteString(w, rep.HTML())
		return err
	})
}

// align runs one alignment (resuming an interrupted one), calls inspect on the finished runner
// when given, and evaluates the result against the base (its report: its greedy replies and
// rewards are reused).
func align(ctx context.Context, cfg cycle.Config, eo eval.Options, base *eval.Report, progress io.Writer,
	inspect func(*cycle.Runner) (*JudgeCheck, error)) (*eval.Report, *JudgeCheck, error) {
	slog.Info("aligning", "method", cfg.Method, "out", cfg.Out)
	r, err := cycle.Prepare(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	r.Progress = progress
	if err := r.Run(ctx); err != nil {
		return nil, nil, err
	}
	if err := r.Finish(); err != nil {
		return nil, nil, err
	}
	var jc *JudgeCheck
	if inspect != nil {
		if jc, err = inspect(r); err != nil {
			return nil, nil, err
		}
	}
	slog.Info("evaluating the aligned model", "method", cfg.Method, "prompts", len(eo.Prompts))
	eo.Model, eo.BaselineReport = r.M, base
	rep, err := eval.Run(ctx, eo)
	return rep, jc, err
}

// checkJudge measures the judge (see JudgeCheck): its criterion on the held-out pairs, and its
// rankings of candidates the base samples for the evaluation prompts, with the demonstrations
// the finished run would send and without. It takes about a minute on 2 cores, shown on w.
func checkJudge(ctx context.Context, r *cycle.Runner, base *model.Model, ev *blackbox.RewardModel, heldout []data.Pair, prompts []string, cfg cycle.Config,
	w io.Writer) (*JudgeCheck, error) {
	bar := progress.New(w, 3, "judge check")
	defer bar.Finish()
	bar.Set(0, "held-out pairs")
	crit := &lexicon.Harmless{}
	judge := &blackbox.Judge{Scorer: crit, DemoWeight: cfg.Blackbox.DemoWeight}
	jc := &JudgeCheck{HeldoutPairs: len(heldout)}
	var hp, hr []string // held-out prompts and replies, scored in one batch
	for _, p := range heldout {
		hp, hr = append(hp, p.Prompt, p.Prompt), append(hr, p.Chosen, p.Rejected)
	}
	evh, err := ev.ScorePairs(ctx, hp, hr)
	if err != nil {
		return nil, err
	}
	agree, human, kept, evHuman := 0, 0, 0, 0
	for i, p := range heldout {
		x := crit.Score(p.Chosen) - crit.Score(p.Rejected)
		y := evh[2*i] - evh[2*i+1]
		if y > 0 {
			evHuman++
		}
		if x != 0 && y != 0 {
			jc.DecidedPairs++
			if (x > 0) == (y > 0) {
				agree++
			}
		}
		if x == 0 {
			continue
		}
		jc.CriterionPairs++
		if x > 0 {
			human++
		}
		s, err := judge.Scores(ctx, blackbox.Request{Prompt: p.Prompt, Candidates: []string{p.Chosen, p.Rejected}, Demos: r.DemosFor(p.Prompt)})
		if err != nil {
			return nil, err
		}
		if (s[0]-s[1])*x > 0 {
			kept++
		}
	}
	jc.CriterionVsEvaluator = eval.Rate(agree, jc.DecidedPairs)
	jc.CriterionVsHuman = eval.Rate(human, jc.CriterionPairs)
	jc.JudgeVsCriterion = eval.Rate(kept, jc.CriterionPairs)
	jc.EvaluatorVsHuman = eval.Rate(evHuman, len(heldout))

	bar.Set(1, "sampling candidates")
	opt := generate.Defaults()
	opt.N, opt.MaxNewTokens, opt.Temperature, opt.TopP, opt.Seed = cfg.N, cfg.MaxNewTokens, cfg.Temperature, cfg.TopP, cfg.Seed+1
	opt.Progress = func(done, n int) { bar.Set(1+float64(done)/float64(n), "sampling candidates") }
	samples, err := generate.Text(ctx, base, prompts, opt)
	if err != nil {
		return nil, err
	}
	var pairs, withOK, withoutOK, demos int
	for i, p := range prompts {
		bar.Set(2+float64(i)/float64(len(prompts)), "ranking with and without demonstrations")
		cands := make([]string, len(samples[i]))
		for k, c := range samples[i] {
			cands[k] = c.Text
		}
		req := blackbox.Request{Prompt: p, Candidates: cands}
		without, err := judge.Scores(ctx, req)
		if err != nil {
			return nil, err
		}
		req.Demos = r.DemosFor(p)
		demos += len(req.Demos)
		with, err := judge.Scores(ctx, req)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(blackbox.Order(without), blackbox.Order(with)) {
			jc.Changed++
		}
		evs, err := ev.Scores(ctx, p, cands)
		if err != nil {
			return nil, err
		}
		for a := range cands {
			for b := a + 1; b < len(cands); b++ {
				d := evs[a] - evs[b]
				if d == 0 {
					continue
				}
				pairs++
				if (without[a]-without[b])*d > 0 {
					withoutOK++
				}
				if (with[a]-with[b])*d > 0 {
					withOK++
				}
			}
		}
	}
	jc.Requests = len(prompts)
	jc.Changed /= float64(max(len(prompts), 1))
	jc.MeanDemos = float64(demos) / float64(max(len(prompts), 1))
	jc.AgreeWithout, jc.AgreeWith = eval.Rate(withoutOK, pairs), eval.Rate(withOK, pairs)
	bar.Log(func() {
		slog.Info("judge check", "criterion_vs_evaluator", fmt.Sprintf("%.3f", jc.CriterionVsEvaluator),
			"changed", fmt.Sprintf("%.3f", jc.Changed), "agree_without", fmt.Sprintf("%.3f", jc.AgreeWithout), "agree_with", fmt.Sprintf("%.3f", jc.AgreeWith))
	})
	return jc, nil
}

// Summary is the demo's judge measurement as text.
func (j *JudgeCheck) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "judge (with the run's demonstrations) vs its own criterion on the %d of %d held-out pairs the criterion decides: %.3f; the criterion vs the human label there: %.3f\n",
		j.CriterionPairs, j.HeldoutPairs, j.JudgeVsCriterion, j.CriterionVsHuman)
	fmt.Fprintf(&b, "judge criterion vs the evaluator on the %d held-out pairs both decide: %.3f; the evaluator vs the human label on all %d: %.3f\n",
		j.DecidedPairs, j.CriterionVsEvaluator, j.HeldoutPairs, j.EvaluatorVsHuman)
	fmt.Fprintf(&b, "demonstrations (%.1f a request) changed %.1f%% of %d rankings; agreement with the evaluator %.3f without, %.3f with\n",
		j.MeanDemos, 100*j.Changed, j.Requests, j.AgreeWithout, j.AgreeWith)
	return b.String()
}

// verdict reads each method's win rate against the base: a measured gain only when its whole
// 95% interval lies above 1/2.
func verdict(names []string, reps []*eval.Report) string {
	var b strings.Builder
	for i, r := range reps {
		iv := r.WinRate
		if iv == nil {
			continue
		}
		what := "its interval holds 1/2: no measured difference from the base"
		switch {
		case iv.Lo > 0.5:
			what = "its interval lies above 1/2: a measured gain over the base"
		case iv.Hi < 0.5:
			what = "its interval lies below 1/2: a measured loss against the base"
		}
		fmt.Fprintf(&b, "verdict: %s wins %.3f [%.3f, %.3f] under the evaluator; %s\n", names[i], iv.Mean, iv.Lo, iv.Hi, what)
	}
	return b.String()
}

// classesLine is the class counts of each model's greedy replies as text.
func classesLine(c map[string]map[string]int, models []string) string {
	var names []string
	for k := lexicon.Declines; k <= lexicon.Offends; k++ {
		names = append(names, k.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "greedy replies by the judge's class (%s):", strings.Join(names, "/"))
	for i, m := range models {
		if i > 0 {
			b.WriteString(";")
		}
		counts := make([]string, len(names))
		for k, n := range names {
			counts[k] = strconv.Itoa(c[m][n])
		}
		fmt.Fprintf(&b, " %s %s", m, strings.Join(counts, "/"))
	}
	return b.String() + "\n"
}

func writePrompts(path string, prompts []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, p := range prompts {
		if err := enc.Encode(map[string]string{"prompt": p}); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// serveJudge starts the judge behind a loopback chat-completions server.
func serveJudge(o blackbox.Options) (url string, stop func(), err error) {
	judge, err := o.Build(0)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: blackbox.JudgeHandler(judge, "harmless-judge")}
	go srv.Serve(ln)
	return fmt.Sprintf("http://%s/v1", ln.Addr()), func() { srv.Close() }, nil
}
