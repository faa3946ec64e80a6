package eval

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/data"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/progress"
)

// Options say what to evaluate and against what.
type Options struct {
	Model    *model.Model // the model under test (needed for the pair metrics)
	Remote   *Remote      // or a served model: responses come from its API
	Baseline *model.Model // win rate against it (optional)
	// BaselineReport, when set, is the baseline's own report from Run on the same prompts with
	// the same decoding and reward model: its greedy responses and rewards stand in for
	// generating and scoring them again (a demo evaluates two models against one base).
	BaselineReport *Report
	RewardModel    blackbox.Scorer // reward (a reward model, a lexicon), and the win-rate judge unless Judge is set (optional)
	Judge          blackbox.Ranker // a black-box judge for the win rate (optional)
	Prompts        []string        // held-out prompts (greedy responses are generated), as text
	// Conversations, when the prompts are conversations, holds each one's messages (Prompts
	// then holds them in words): the model answers them through its chat template, a reward
	// model with a template scores them rendered, a served model is asked through its chat API.
	Conversations [][]chat.Message
	Pairs         []data.Pair // held-out chosen/rejected pairs (preference accuracy, BLEU, perplexity)
	MaxNewTokens  int
	// NoRepeatNGram: greedy responses never repeat an n-gram of prompt and response, as HF's
	// no_repeat_ngram_size (0: plain greedy).
	NoRepeatNGram int
	Seed          uint64
	Progress      io.Writer // progress display (nil: none)
}

// Report holds every number, each mean with its 95% bootstrap interval.
type Report struct {
	Prompts            int        `json:"prompts"`
	Reward             *Interval  `json:"reward,omitempty"`
	RewardQuantiles    [5]float64 `json:"reward_quantiles"`
	BaselineReward     *Interval  `json:"baseline_reward,omitempty"`
	WinRate            *Interval  `json:"win_rate,omitempty"`
	Wins               int        `json:"wins"`
	Ties               int        `json:"ties"`
	Losses             int        `json:"losses"`
	Judge              string     `json:"judge,omitempty"`
	PreferenceAccuracy *Interval  `json:"preference_accuracy,omitempty"`
	BLEU               *float64   `json:"bleu,omitempty"`
	Perplexity         *Interval  `json:"perplexity,omitempty"`
	DistinctBigrams    float64    `json:"distinct_bigrams"` // distinct word bigrams over all bigrams of the greedy responses
	Unique             float64    `json:"unique_responses"` // fraction of prompts whose greedy response no other prompt got
	Samples            []Sample   `json:"samples,omitempty"`
}

// Sample is one prompt with the responses compared.
type Sample struct {
	Prompt   string  `json:"prompt"`
	Response string  `json:"response"`
	Baseline string  `json:"baseline,omitempty"`
	Reward   float64 `json:"reward"`
}

// greedy generates the greedy response to each prompt, in batches of 32, telling done the
// fraction finished after each.
func greedy(ctx context.Context, m *model.Model, prompts []string, convs [][]chat.Message, maxNew, noRepeat int, done func(float64)) ([]string, error) {
	opt := generate.Options{N: 1, MaxNewTokens: maxNew, Greedy: true, TopP: 1, Stop: []string{generate.DefaultStop}, MaxRows: 32,
		TruncatePrompt: true, NoRepeatNGram: noRepeat, Progress: func(d, n int) { done(float64(d) / float64(n)) }}
	if convs != nil {
		opt.Stop = nil // a conversation's reply ends at the model's end tokens
	}
	ids := make([][]int, len(prompts))
	for i, p := range prompts {
		cp := chat.Prompt{Text: p}
		if convs != nil {
			cp = chat.Prompt{Messages: convs[i]}
		}
		var err error
		if ids[i], err = m.PromptIDs(cp); err != nil {
			return nil, err
		}
	}
	res, err := generate.IDs(ctx, m, ids, opt)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(prompts))
	for i, r := range res {
		out[i] = r[0].Text
	}
	return out, nil
}

// phases counts the units of work Run will do, for its progress display.
func (o Options) phases() int {
	n := 1 // greedy responses
	if o.RewardModel != nil {
		n++
	}
	if o.Baseline != nil || o.BaselineReport != nil {
		n += 2 // its responses, and judging both
	}
	if len(o.Pairs) > 0 && o.Model != nil {
		n++
	}
	return n
}

// baseline returns the baseline's greedy responses, and their rewards when there is a reward
// model: from o.BaselineReport when given, else generated and scored.
func (o Options) baseline(ctx context.Context, done func(float64)) ([]string, []float64, error) {
	if br := o.BaselineReport; br != nil {
		if len(br.Samples) != len(o.Prompts) {
			return nil, nil, fmt.Errorf("the baseline's report has %d samples for %d prompts", len(br.Samples), len(o.Prompts))
		}
		base := make([]string, len(o.Prompts))
		var rs []float64
		if o.RewardModel != nil {
			if br.Reward == nil {
				return nil, nil, fmt.Errorf("the baseline's report has no rewards")
			}
			rs = make([]float64, len(o.Prompts))
		}
		for i, s := range br.Samples {
			if s.Prompt != o.Prompts[i] {
				return nil, nil, fmt.Errorf("the baseline's report has another prompt at %d", i)
			}
			base[i] = s.Response
			if rs != nil {
				rs[i] = s.Reward
			}
		}
		return base, rs, nil
	}
	base, err := greedy(ctx, o.Baseline, o.Prompts, o.Conversations, o.MaxNewTokens, o.NoRepeatNGram, done)
	if err != nil || o.RewardModel == nil {
		return base, nil, err
	}
	rs, err := blackbox.ScoreReplies(ctx, o.RewardModel, o.Prompts, o.Conversations, base)
	return base, rs, err
}

// Run evaluates o.Model.
func Run(ctx context.Context, o Options) (*Report, error) {
	if len(o.Prompts) == 0 {
		return nil, fmt.Errorf("no prompts to evaluate")
	}
	if o.Remote != nil && o.NoRepeatNGram > 0 {
		// Neither OpenAI's API nor vLLM's takes HF's no_repeat_ngram_size: the served model would
		// decode plain greedy while the report claimed otherwise.
		return nil, fmt.Errorf("no-repeat n-gram size %d: a served model under test (--model-url) cannot be asked for it; use 0", o.NoRepeatNGram)
	}
	if o.Conversations != nil && len(o.Conversations) != len(o.Prompts) {
		return nil, fmt.Errorf("%d conversations for %d prompts", len(o.Conversations), len(o.Prompts))
	}
	if o.MaxNewTokens <= 0 {
		o.MaxNewTokens = 128
	}
	rep := &Report{Prompts: len(o.Prompts)}
	bar := progress.New(o.Progress, o.phases(), "eval")
	defer bar.Finish()
	unit := 0.0
	at := func(what string) func(float64) { return func(f float64) { bar.Set(unit+f, what) } }
	next := func(what string) { unit++; bar.Set(unit, what) }
	var resp []string
	var err error
	if o.Remote != nil {
		resp, err = o.Remote.greedy(ctx, o.Prompts, o.Conversations, o.MaxNewTokens)
	} else {
		resp, err = greedy(ctx, o.Model, o.Prompts, o.Conversations, o.MaxNewTokens, o.NoRepeatNGram, at("greedy responses"))
	}
	if err != nil {
		return nil, err
	}
	next("greedy responses")
	for i, p := range o.Prompts {
		rep.Samples = append(rep.Samples, Sample{Prompt: p, Response: resp[i]})
	}
	rep.DistinctBigrams, rep.Unique = Diversity(resp)
	var rewards []float64 // of resp, with a reward model
	if o.RewardModel != nil {
		if rewards, err = blackbox.ScoreReplies(ctx, o.RewardModel, o.Prompts, o.Conversations, resp); err != nil {
			return nil, err
		}
		iv := Bootstrap(rewards, o.Seed)
		rep.Reward, rep.RewardQuantiles = &iv, Quantiles(rewards)
		for i, r := range rewards {
			rep.Samples[i].Reward = r
		}
		next("rewards")
	}
	if o.Baseline != nil || o.BaselineReport != nil {
		base, baseRewards, err := o.baseline(ctx, at("baseline's responses"))
		if err != nil {
			return nil, err
		}
		for i := range base {
			rep.Samples[i].Baseline = base[i]
		}
		next("baseline's responses")
		if baseRewards != nil {
			iv := Bootstrap(baseRewards, o.Seed)
			rep.BaselineReward = &iv
		}
		judge := o.Judge
		if judge == nil && o.RewardModel != nil {
			judge = &blackbox.Judge{Scorer: o.RewardModel}
		}
		if judge != nil {
			var js [][2]Outcome
			if o.Judge == nil && baseRewards != nil {
				// The reward model judges: both orders rank by the rewards already computed.
				js = rewardOutcomes(resp, base, rewards, baseRewards)
			} else if js, err = judgeBothOrders(ctx, judge, o.Prompts, o.Conversations, resp, base, o.Seed, at("judging")); err != nil {
				return nil, err
			}
			iv, w, t, l := WinRate(js, o.Seed)
			rep.WinRate, rep.Wins, rep.Ties, rep.Losses, rep.Judge = &iv, w, t, l, judge.Describe()
		}
		next("judging")
	}
	if len(o.Pairs) > 0 && o.Model != nil {
		if err := pairMetrics(ctx, o, rep, resp); err != nil {
			return nil, err
		}
		next("pair metrics")
	}
	return rep, nil
}

// Diversity measures responses: distinct word bigrams over all word bigrams (distinct-2), and
// the fraction of responses that no other response equals.
func Diversity(responses []string) (distinct2, unique float64) {
	seen := map[string]bool{}
	total := 0
	count := map[string]int{}
	for _, r := range responses {
		count[strings.TrimSpace(r)]++
		ws := strings.Fields(strings.ToLower(r))
		for i := 1; i < len(ws); i++ {
			seen[ws[i-1]+" "+ws[i]] = true
			total++
		}
	}
	if total > 0 {
		distinct2 = float64(len(seen)) / float64(total)
	}
	for _, r := range responses {
		if count[strings.TrimSpace(r)] == 1 {
			unique++
		}
	}
	if len(responses) > 0 {
		unique /= float64(len(responses))
	}
	return distinct2, unique
}

// judgeBothOrders asks the judge about (model, baseline) and (baseline, model) for each prompt.
// Identical responses are a tie without asking.
func judgeBothOrders(ctx context.Context, judge blackbox.Ranker, prompts []string, convs [][]chat.Message, a, b []string, seed uint64, done func(float64)) ([][2]Outcome, error) {
	out := make([][2]Outcome, len(prompts))
	for i := range prompts {
		done(float64(i) / float64(len(prompts)))
		if a[i] == b[i] {
			out[i] = [2]Outcome{Tie, Tie}
			continue
		}
		for k, c := range [][]string{{a[i], b[i]}, {b[i], a[i]}} {
			req := blackbox.Request{Prompt: prompts[i], Candidates: c, Seed: seed + uint64(i)}
			if convs != nil {
				req.Conversation = convs[i]
			}
			res, err := judge.Rank(ctx, req)
			if err != nil {
				return nil, err
			}
			out[i][k] = outcome(res, k)
		}
	}
	return out, nil
}

// rewardOutcomes is what judgeBothOrders returns with a blackbox.Judge of the Scorer that gave
// ra and rb (the rewards of a and b): the same rankings, without scoring the replies again.
func rewardOutcomes(a, b []string, ra, rb []float64) [][2]Outcome {
	out := make([][2]Outcome, len(a))
	for i := range a {
		if a[i] == b[i] {
			out[i] = [2]Outcome{Tie, Tie}
			continue
		}
		for k, s := range [][]float64{{ra[i], rb[i]}, {rb[i], ra[i]}} {
			out[i][k] = outcome(&blackbox.Result{Ranking: blackbox.Order(s)}, k)
		}
	}
	return out
}

// outcome is the model's result in a ranking of two replies where its own sits at index k.
func outcome(res *blackbox.Result, k int) Outcome {
	switch {
	case res.Unranked || len(res.Ranking) == 0:
		return Tie
	case res.Ranking[0] == k:
		return Win
	}
	return Loss
}

// pairMetrics: preference accuracy (length-normalised log-probability of chosen above
// rejected), perplexity on the chosen responses, and BLEU of greedy responses against them.
// resp are the greedy responses to o.Prompts, reused for BLEU when the pairs are of the same
// prompts.
func pairMetrics(ctx context.Context, o Options, rep *Report, resp []string) error {
	var ps, rs []string
	for _, p := range o.Pairs {
		if strings.TrimSpace(p.Chosen) == "" || strings.TrimSpace(p.Rejected) == "" {
			continue
		}
		ps = append(ps, p.Prompt, p.Prompt)
		rs = append(rs, p.Chosen, p.Rejected)
	}
	if len(ps) == 0 {
		return fmt.Errorf("no usable pairs")
	}
	pIDs, rIDs := make([][]int, len(ps)), make([][]int, len(ps))
	maxLen := o.Model.Config.MaxPositions
	for i := range ps {
		pIDs[i], rIDs[i] = model.FitContext(o.Model.Tokenizer.Encode(ps[i], true), o.Model.Tokenizer.Encode(rs[i], false), maxLen)
	}
	sc, err := o.Model.ScoreIDs(ctx, pIDs, rIDs)
	if err != nil {
		return err
	}
	n := len(ps) / 2
	acc := make([]float64, n)
	nll := make([]float64, n)
	toks := make([]float64, n)
	for i := 0; i < n; i++ {
		if sc[2*i].Mean > sc[2*i+1].Mean {
			acc[i] = 1
		}
		nll[i], toks[i] = -sc[2*i].Sum, float64(len(sc[2*i].ResponseIDs))
	}
	a := Bootstrap(acc, o.Seed)
	rep.PreferenceAccuracy = &a
	ppl := BootstrapStat(n, o.Seed, func(idx []int) float64 {
		s, t := 0.0, 0.0
		for _, i := range idx {
			s, t = s+nll[i], t+toks[i]
		}
		return math.Exp(s / t)
	})
	rep.Perplexity = &ppl
	prompts := make([]string, n)
	refs := make([][]string, n)
	for i := 0; i < n; i++ {
		prompts[i], refs[i] = ps[2*i], []string{rs[2*i]}
	}
	hyps := resp
	if !slices.Equal(prompts, o.Prompts) {
		var err error
		if hyps, err = greedy(ctx, o.Model, prompts, nil, o.MaxNewTokens, o.NoRepeatNGram, func(float64) {}); err != nil {
			return err
		}
	}
	bleu := CorpusBLEU(hyps, refs)
	rep.BLEU = &bleu
	return nil
}

// Table renders reports side by side (e.g. base and aligned).
func Table(names []string, reps []*Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-24s", "metric")
	for _, n := range names {
		fmt.Fprintf(&b, " %26s", n)
	}
	b.WriteString("\n")
	row := func(label string, get func(*Report) string) {
		fmt.Fprintf(&b, "%-24s", label)
		for _, r := range reps {
			fmt.Fprintf(&b, " %26s", get(r))
		}
		b.WriteString("\n")
	}
	iv := func(x *Interval, scale float64, unit string) string {
		if x == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f%s [%.3f, %.3f]", x.Mean*scale, unit, x.Lo*scale, x.Hi*scale)
	}
	row("mean reward", func(r *Report) string { return iv(r.Reward, 1, "") })
	row("win rate vs baseline", func(r *Report) string { return iv(r.WinRate, 1, "") })
	row("preference accuracy", func(r *Report) string { return iv(r.PreferenceAccuracy, 1, "") })
	row("perplexity (chosen)", func(r *Report) string { return iv(r.Perplexity, 1, "") })
	row("BLEU vs chosen", func(r *Report) string {
		if r.BLEU == nil {
			return "-"
		}
		return fmt.Sprintf("%.2f", *r.BLEU)
	})
	row("distinct bigrams", func(r *Report) string { return fmt.Sprintf("%.3f", r.DistinctBigrams) })
	row("unique responses", func(r *Report) string { return fmt.Sprintf("%.3f", r.Unique) })
	return b.String()
}
