package cycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"github.com/cyclealign/cyclealign/internal/blackbox"
	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/eval"
	"github.com/cyclealign/cyclealign/internal/generate"
	"github.com/cyclealign/cyclealign/internal/lockfile"
	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/progress"
	"github.com/cyclealign/cyclealign/internal/train"
)

// Runner executes a run. Build one with the parts, then call Run.
type Runner struct {
	Cfg      Config // effective and validated
	M        *model.Model
	Ranker   blackbox.Ranker
	Static   []blackbox.Demo
	Prompts  []chat.Prompt // all texts or all conversations
	Progress io.Writer     // a live bar; nil: none
	// Eval, when set, runs every Cfg.EvalEvery steps; its numbers go to metrics.jsonl.
	Eval func(ctx context.Context, step int) (map[string]float64, error)
	// StopAfter returns after this many steps of this call (tests); 0: off.
	StopAfter int

	tr     *train.Trainer
	remote *remoteSampler // nil: candidates are sampled in-process
	pool   Pool
	lock   *lockfile.Lock
	sched  schedule
	// Saved is the last step a checkpoint holds (0: none), for what an interrupted run says.
	Saved int
}

// extra files kept in each checkpoint next to the weights.
type runState struct {
	Steps int     `json:"steps"` // completed steps
	Cost  float64 `json:"cost"`  // estimated API spend so far
}

// Paths inside a run directory.
const (
	ConfigFile  = "config.yaml"
	JournalFile = "journal.jsonl"
	MetricsFile = "metrics.jsonl"
	PoolFile    = "pool.json"
)

func mix(a, b, c uint64) uint64 {
	return rand.New(rand.NewPCG(a^0x243f6a8885a308d3, b<<32|c)).Uint64()
}

// promptsFor returns the prompts of a step: consecutive slices of a seeded shuffle of the
// prompt file, reshuffled each pass. A prompt that would come twice in one batch (where one
// pass ends and the next begins) waits for the next batch. Batches are drawn in order from the
// start (and kept), so any step's batch follows from its number.
func (r *Runner) promptsFor(step int) []chat.Prompt {
	for len(r.sched.batches) <= step {
		r.sched.batches = append(r.sched.batches, r.sched.next(len(r.Prompts), r.Cfg.BatchSize, r.Cfg.Seed))
	}
	out := make([]chat.Prompt, r.Cfg.BatchSize)
	for j, p := range r.sched.batches[step] {
		out[j] = r.Prompts[p]
	}
	return out
}

// schedule is the stream of prompt indices promptsFor cuts into batches.
type schedule struct {
	pos     int   // indices drawn from the stream
	perm    []int // the current pass's order
	waiting []int // drawn, deferred to a later batch
	batches [][]int
}

func (s *schedule) next(n, size int, seed uint64) []int {
	var batch []int
	seen := map[int]bool{}
	take := func(p int) bool {
		// With fewer prompts than a batch holds, repeats cannot be avoided.
		if len(batch) == size || seen[p] && size <= n {
			return false
		}
		batch, seen[p] = append(batch, p), true
		return true
	}
	var still []int
	for _, p := range s.waiting {
		if !take(p) {
			still = append(still, p)
		}
	}
	s.waiting = still
	for len(batch) < size {
		if s.pos%n == 0 {
			s.perm = rand.New(rand.NewPCG(seed, uint64(s.pos/n))).Perm(n)
		}
		p := s.perm[s.pos%n]
		s.pos++
		if !take(p) {
			s.waiting = append(s.waiting, p)
		}
	}
	return batch
}

// Run executes the remaining steps, resuming from the run directory's last checkpoint.
func (r *Runner) Run(ctx context.Context) error {
	c := r.Cfg
	loss, err := train.NewLoss(c.Loss, c.SFTWeight, c.SFTNorm, c.PROTemp)
	if err != nil {
		return err
	}
	opt := train.DefaultOptimizer()
	opt.LR, opt.WeightDecay, opt.ClipNorm = c.LR, c.WeightDecay, c.Clip
	opt = opt.Schedule(c.Steps*c.Interactions, c.WarmupRatio)
	r.tr = train.NewTrainer(r.M, loss, opt)
	r.tr.DropoutSeed = c.Seed
	r.pool = Pool{Max: c.PoolSize}
	ckdir := filepath.Join(c.Out, "checkpoints")
	_, ck, found, err := r.tr.LoadCheckpoint(ckdir)
	if err != nil {
		return err
	}
	var rs runState
	if found {
		if err := train.ReadJSON(filepath.Join(ck, PoolFile), &r.pool); err != nil {
			return err
		}
		if err := train.ReadJSON(filepath.Join(ck, "cycle.json"), &rs); err != nil {
			return err
		}
		slog.Info("resuming", "run", c.Out, "completed_steps", rs.Steps, "pool", len(r.pool.Entries), "cost", rs.Cost)
		r.Saved = rs.Steps
	}
	if err := train.RefuseOrphanRecords(ckdir, rs.Steps, c.SaveEvery, filepath.Join(c.Out, JournalFile), filepath.Join(c.Out, MetricsFile)); err != nil {
		return err
	}
	for _, f := range []string{JournalFile, MetricsFile} {
		if err := train.TruncateJSONL(filepath.Join(c.Out, f), "step", rs.Steps); err != nil {
			return err
		}
	}
	journal, err := openAppender(filepath.Join(c.Out, JournalFile))
	if err != nil {
		return err
	}
	defer journal.close()
	metrics, err := openAppender(filepath.Join(c.Out, MetricsFile))
	if err != nil {
		return err
	}
	defer metrics.close()
	bar := progress.New(r.Progress, c.Steps, "align")
	bar.Set(float64(rs.Steps), "starting")
	// phase reports progress within step (0-based) as a fraction of it, so the ETA holds from
	// the first step on.
	phase := func(step int, frac float64, s string) { bar.Set(float64(step)+frac, s) }
	save := func() error {
		st := train.State{Step: r.tr.Step, Seed: c.Seed, Examples: len(r.Prompts)}
		extra := map[string]any{PoolFile: r.pool, "cycle.json": rs}
		if err := r.tr.SaveCheckpoint(ckdir, st, c.Keep, extra); err != nil {
			return err
		}
		r.Saved = rs.Steps
		return train.WriteJSON(filepath.Join(c.Out, PoolFile), r.pool)
	}
	done := 0
	for step := rs.Steps; step < c.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return err // the last completed step is already checkpointed
		}
		m, err := r.step(ctx, step, journal, phase)
		if err != nil {
			return err
		}
		rs.Cost += m.Cost
		rs.Steps = step + 1
		m.CostTotal = rs.Cost
		if r.Eval != nil && c.EvalEvery > 0 && (step+1)%c.EvalEvery == 0 {
			phase(step, 0.99, fmt.Sprintf("step %d: evaluating", step+1))
			if m.Eval, err = r.Eval(ctx, step+1); err != nil {
				return err
			}
		}
		if err := metrics.write(m); err != nil {
			return err
		}
		if err := errors.Join(journal.sync(), metrics.sync()); err != nil {
			return err
		}
		if (step+1)%c.SaveEvery == 0 || step+1 == c.Steps {
			if err := save(); err != nil {
				return err
			}
		}
		if m.Ranked == 0 && m.Unranked > 0 {
			bar.Log(func() {
				slog.Warn("every prompt of this step came back unranked: the black-box's replies did not parse as rankings, and nothing was trained",
					"step", step+1, "unranked", m.Unranked, "replies", filepath.Join(c.Out, JournalFile)+" (raw_replies)")
			})
		}
		bar.Set(float64(step+1), fmt.Sprintf("step %d: agree %.0f%% |A| %.1f pool %d unranked %d $%.4f", step+1, 100*m.AgreementRate, m.MeanAgreement, m.PoolSize, m.Unranked, rs.Cost))
		if !bar.Live() {
			slog.Info("step", "step", step+1, "of", c.Steps, "loss", fmt.Sprintf("%.4f", m.Loss), "agreement", fmt.Sprintf("%.2f", m.AgreementRate),
				"mean_A", fmt.Sprintf("%.2f", m.MeanAgreement), "pool", m.PoolSize, "unranked", m.Unranked, "cost", fmt.Sprintf("%.4f", rs.Cost))
		}
		if done++; r.StopAfter > 0 && done >= r.StopAfter {
			return nil
		}
	}
	bar.Finish()
	if r.tr.Step == 0 {
		return fmt.Errorf("%w: every prompt came back unranked, so not one optimiser step was taken; the black-box's replies are in %s (raw_replies)",
			ErrNothingTrained, filepath.Join(c.Out, JournalFile))
	}
	return nil
}

// ErrNothingTrained ends a run in which no optimiser step could be taken.
var ErrNothingTrained = errors.New("nothing was trained")

// step runs one batch of prompts through generation and T interactions.
func (r *Runner) step(ctx context.Context, step int, journal *appender, phase func(step int, frac float64, s string)) (*StepMetrics, error) {
	c := r.Cfg
	start := time.Now()
	m := &StepMetrics{Step: step + 1}
	batch := r.promptsFor(step)
	// The white-box continues each prompt's tokens (a conversation rendered by the model's
	// chat template); the black-box, the journal and the demonstrations read it as plain text.
	promptIDs := make([][]int, len(batch))
	for i, p := range batch {
		var err error
		if promptIDs[i], err = r.M.PromptIDs(p); err != nil {
			return nil, err
		}
	}
	phase(step, 0, fmt.Sprintf("step %d: generating", step+1))
	// Generation takes about a third of a step; the interactions share the rest.
	at := func(t int, part float64) float64 { return 0.35 + 0.65*(float64(t)+part)/float64(c.Interactions) }
	t0 := time.Now()
	cands, ended, genTokens, err := r.candidates(ctx, promptIDs, step)
	if err != nil {
		return nil, err
	}
	m.GenTokens, m.SampleSeconds = genTokens, time.Since(t0).Seconds()
	sampledBy := ""
	if r.remote != nil {
		sampledBy = r.remote.serving
	}
	var agreeSum, agreeN, aSum, ranked int
	for t := 0; t < c.Interactions; t++ {
		phase(step, at(t, 0), fmt.Sprintf("step %d.%d: white-box judging", step+1, t+1))
		t0 := time.Now()
		white, err := r.whiteRanking(ctx, promptIDs, cands, ended)
		if err != nil {
			return nil, err
		}
		m.ScoreSeconds += time.Since(t0).Seconds()
		t0 = time.Now()
		phase(step, at(t, 0.2), fmt.Sprintf("step %d.%d: black-box ranking", step+1, t+1))
		recs, err := r.blackRanking(ctx, step, t, batch, promptIDs, cands, white)
		if err != nil {
			return nil, err
		}
		for i := range recs {
			recs[i].Weights, recs[i].Ended = sampledBy, ended[i]
		}
		m.BlackboxSeconds += time.Since(t0).Seconds()
		var exs []train.Example
		iterAgree, iterN, iterA := 0, 0, 0
		for i := range recs {
			rec := &recs[i]
			m.APIPromptTokens += rec.Usage.PromptTokens
			m.APIOutTokens += rec.Usage.CompletionTokens
			m.APIRequests += rec.Usage.Requests
			m.CachedRequests += rec.Usage.CachedRequests
			m.Cost += rec.Usage.Cost
			if rec.Skipped != "" {
				continue
			}
			if rec.Unranked {
				m.Unranked++
				continue
			}
			ranked++
			iterN++
			rec.Agreement = blackbox.LCS(rec.BlackRanking, rec.WhiteRanking)
			iterA += len(rec.Agreement)
			if len(rec.Agreement) >= c.Tau {
				iterAgree++
			}
			// A candidate with no tokens (a blank reply that survived its re-sample) has no
			// log-probability to rank: it leaves the ranking, recorded in the journal.
			ex := train.Example{Prompt: promptIDs[i]}
			for _, k := range rec.BlackRanking {
				ids := r.responseIDs(rec.Candidates[k], rec.Ended[k])
				if len(ids) == 0 {
					rec.NoTokens = append(rec.NoTokens, k)
					continue
				}
				ex.Candidates = append(ex.Candidates, ids)
				if rec.Rewards != nil {
					ex.Rewards = append(ex.Rewards, rec.Rewards[k])
				}
			}
			if len(ex.Candidates) >= 2 {
				exs = append(exs, ex.Fit(r.M.Config.MaxPositions))
			} else {
				rec.Skipped = fmt.Sprintf("not trained on: %d of %d candidates have no tokens", len(rec.NoTokens), len(rec.Candidates))
			}
		}
		// Pool update after the whole interaction, so every prompt of it saw the same pool.
		for i := range recs {
			rec := &recs[i]
			if rec.Skipped != "" || rec.Unranked || c.NumDynamic == 0 {
				continue
			}
			demo := blackbox.Demo{Prompt: rec.Prompt, Candidates: rec.Candidates, Ranking: rec.Agreement}
			if c.Method == NoAgreement {
				demo.Ranking = rec.BlackRanking
			} else if len(rec.Agreement) < c.Tau || len(rec.Agreement) < 2 {
				continue
			}
			r.pool.Add(demo, step+1, t+1)
			rec.EnteredPool = true
		}
		m.AgreementByIter = append(m.AgreementByIter, eval.Rate(iterAgree, iterN))
		m.MeanAByIter = append(m.MeanAByIter, eval.Rate(iterA, iterN))
		agreeSum, agreeN = agreeSum+iterAgree, agreeN+iterN
		aSum += iterA
		for _, rec := range recs {
			if err := journal.write(rec); err != nil {
				return nil, err
			}
		}
		if len(exs) == 0 {
			continue
		}
		phase(step, at(t, 0.6), fmt.Sprintf("step %d.%d: training", step+1, t+1))
		m.LR = r.tr.Opt.LRAt(r.tr.Step)
		t0 = time.Now()
		s, err := r.tr.AccumulateIn(ctx, exs, c.GradAccum)
		if err != nil {
			return nil, err
		}
		if m.GradNorm, err = r.tr.Apply(); err != nil {
			return nil, err
		}
		m.TrainSeconds += time.Since(t0).Seconds()
		n := float64(s.Examples * c.Interactions)
		m.Loss += s.Loss / n
		m.RankTerm += s.Rank / n
		m.SFTTerm += s.SFT / n
		m.TrainTokens += s.Tokens
	}
	m.AgreementRate = eval.Rate(agreeSum, agreeN)
	m.MeanAgreement = eval.Rate(aSum, agreeN)
	m.Ranked = ranked
	m.PoolSize = len(r.pool.Entries)
	m.Seconds = time.Since(start).Seconds()
	m.Graphs = model.GraphsBuilt()
	m.TokensPerSec = float64(m.GenTokens+m.TrainTokens) / m.Seconds
	return m, nil
}

// responseIDs are the tokens a candidate is scored and trained on, at most MaxResponse. A
// candidate that ended its turn (EOS or a stop string, not the token budget) keeps the turn's
// end: in a conversation, what the chat template writes after an assistant message
// ("<|im_end|>\n" in ChatML), as TRL's trainers take a completion; for a text prompt, the first
// stop string (the HH format's "\n\nHuman:"), or EOS where no stop string is set, as TRL's
// trainers append EOS to each completion. Without it the model is never taught where a reply
// ends, and every greedy reply runs to the budget.
func (r *Runner) responseIDs(text string, ended bool) []int {
	tok := r.M.Tokenizer
	var ids []int
	switch {
	case text == "": // a blank reply stays out (NoTokens), ended or not: it says nothing to learn from
	case ended && r.chat():
		ids = tok.Encode(text+r.M.TurnEnd(), false)
	case ended && len(r.Cfg.Stop) > 0 && r.Cfg.Stop[0] != "":
		ids = tok.Encode(text+r.Cfg.Stop[0], false)
	case ended && len(r.M.EndIDs()) > 0:
		ids = append(tok.Encode(text, false), r.M.EndIDs()[0])
	default:
		ids = tok.Encode(text, false)
	}
	if n := r.Cfg.MaxResponse; n > 0 && len(ids) > n {
		return ids[:n]
	}
	return ids
}

// chat reports whether the run's prompts are conversations (the prompt file holds one kind).
func (r *Runner) chat() bool { return len(r.Prompts) > 0 && r.Prompts[0].Messages != nil }

// stops are the stop strings of the run: a conversation's reply ends at the model's end
// tokens, so the HH format's "\n\nHuman:" (the default) does not apply to it.
func (r *Runner) stops() []string {
	if !r.chat() {
		return r.Cfg.Stop
	}
	var out []string
	for _, s := range r.Cfg.Stop {
		if s != generate.DefaultStop {
			out = append(out, s)
		}
	}
	return out
}

// candidates samples N responses per prompt, with whether each ended its turn; exact
// duplicates (and empty responses) are re-sampled once, then kept.
func (r *Runner) candidates(ctx context.Context, prompts [][]int, step int) ([][]string, [][]bool, int, error) {
	c := r.Cfg
	opt := generate.Options{N: c.N, MaxNewTokens: c.MaxNewTokens, Temperature: c.Temperature, TopP: c.TopP,
		Stop: r.stops(), Seed: mix(c.Seed, uint64(step), 1), TruncatePrompt: true}
	out, ended, tokens, err := r.texts(ctx, prompts, opt)
	if err != nil {
		return nil, nil, 0, err
	}
	var again []int // (prompt, candidate) pairs to re-sample, flattened
	for i, texts := range out {
		seen := map[string]bool{}
		for j, t := range texts {
			if seen[t] || t == "" {
				again = append(again, i*c.N+j)
			}
			seen[t] = true
		}
	}
	if len(again) > 0 {
		ps := make([][]int, len(again))
		for k, f := range again {
			ps[k] = prompts[f/c.N]
		}
		opt.N, opt.Seed = 1, mix(c.Seed, uint64(step), 2)
		re, reEnded, n, err := r.texts(ctx, ps, opt)
		if err != nil {
			return nil, nil, 0, err
		}
		for k, f := range again {
			out[f/c.N][f%c.N], ended[f/c.N][f%c.N] = re[k][0], reEnded[k][0]
		}
		tokens += n
	}
	return out, ended, tokens, nil
}

// texts samples opt.N completions of each prompt, in-process or from the generation server:
// their texts, whether each ended its turn (finish reason "stop"), and the tokens generated.
func (r *Runner) texts(ctx context.Context, prompts [][]int, opt generate.Options) ([][]string, [][]bool, int, error) {
	var res [][]generate.Completion
	tokens := 0
	var err error
	if r.remote != nil {
		res, tokens, err = r.sample(ctx, prompts, opt)
	} else {
		res, err = generate.IDs(ctx, r.M, prompts, opt)
		for _, comps := range res {
			for _, cp := range comps {
				tokens += len(cp.IDs)
			}
		}
	}
	if err != nil {
		return nil, nil, 0, err
	}
	out, ended := make([][]string, len(res)), make([][]bool, len(res))
	for i, comps := range res {
		for _, cp := range comps {
			out[i] = append(out[i], cp.Text)
			ended[i] = append(ended[i], cp.FinishReason == "stop")
		}
	}
	return out, ended, tokens, nil
}

// whiteRanking scores every candidate by its length-normalised log-probability and sorts.
func (r *Runner) whiteRanking(ctx context.Context, prompts [][]int, cands [][]string, ended [][]bool) ([][]float64, error) {
	var ps, rs [][]int
	for i, pid := range prompts {
		for j, cd := range cands[i] {
			pp, rr := model.FitContext(pid, r.responseIDs(cd, ended[i][j]), r.M.Config.MaxPositions)
			ps, rs = append(ps, pp), append(rs, rr)
		}
	}
	valid := make([]bool, len(rs))
	var vp, vr [][]int
	for k := range rs {
		if valid[k] = len(rs[k]) > 0; valid[k] {
			vp, vr = append(vp, ps[k]), append(vr, rs[k])
		}
	}
	scores, err := r.M.ScoreIDs(ctx, vp, vr)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(prompts))
	v := 0
	for k := range rs {
		s := -1e30 // an empty candidate ranks last
		if valid[k] {
			s = scores[v].Mean
			v++
		}
		out[k/r.Cfg.N] = append(out[k/r.Cfg.N], s)
	}
	return out, nil
}

// DemosFor returns the demonstrations a ranking request for prompt carries now: the static
// ones, then the pool's dynamic ones.
func (r *Runner) DemosFor(prompt string) []blackbox.Demo {
	static := r.Static[:min(r.Cfg.NumStatic, len(r.Static))]
	return append(append([]blackbox.Demo(nil), static...), r.pool.Select(prompt, r.Cfg.NumDynamic, r.Cfg.DemoSelect)...)
}

// blackRanking asks the ranker about every prompt concurrently (the ranker bounds the load).
func (r *Runner) blackRanking(ctx context.Context, step, t int, batch []chat.Prompt, promptIDs [][]int, cands [][]string, white [][]float64) ([]Record, error) {
	c := r.Cfg
	recs := make([]Record, len(batch))
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, p := range batch {
		plain := p.Plain()
		demos := r.DemosFor(plain)
		rec := Record{Step: step + 1, Interaction: t + 1, Prompt: plain, Conversation: p.Messages, PromptTokens: len(promptIDs[i]), Candidates: cands[i],
			WhiteScores: white[i], WhiteRanking: blackbox.Order(white[i])}
		for _, d := range demos {
			rec.Demos = append(rec.Demos, d.Prompt)
		}
		recs[i] = rec
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := r.Ranker.Rank(ctx, blackbox.Request{Prompt: plain, Conversation: p.Messages, Candidates: cands[i], Demos: demos,
				Seed: mix(c.Seed, uint64(step), uint64(t)<<16|uint64(i))})
			if err != nil {
				errs[i] = err
				return
			}
			recs[i].BlackRanking, recs[i].Unranked, recs[i].Permutation = res.Ranking, res.Unranked, res.Permutation
			recs[i].Rewards = res.Rewards
			recs[i].RawReplies, recs[i].RequestIDs, recs[i].Usage = res.Raw, res.RequestIDs, res.Usage
		}(i)
	}
	wg.Wait()
	return recs, errors.Join(errs...)
}
