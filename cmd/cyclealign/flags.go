package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cyclealign/cyclealign/internal/model"
	"github.com/cyclealign/cyclealign/internal/train"
)

// sftWeightFlag binds λ, whose "unset" value (negative) means the loss's own default; the help
// then shows the defaults once, in words, instead of "(default -1)".
func sftWeightFlag(f *pflag.FlagSet, p *float64) {
	f.Var((*lambda)(p), "sft-weight", "λ on the SFT term (default: 1 for rrhf, 0.5 for pro)")
}

type lambda float64

func (l *lambda) String() string {
	if *l < 0 {
		return ""
	}
	return strconv.FormatFloat(float64(*l), 'g', -1, 64)
}

func (l *lambda) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a number >= 0, got %q", s)
	}
	*l = lambda(v)
	return nil
}

func (l *lambda) Type() string { return "float" }

// quotedStrings is a repeatable string flag whose help shows its default escaped, so that a
// default such as "\n\nHuman:" does not break the help's layout.
type quotedStrings struct {
	p   *[]string
	set bool
}

func stringsFlag(f *pflag.FlagSet, p *[]string, name, usage string) {
	f.Var(&quotedStrings{p: p}, name, usage)
}

func (q *quotedStrings) String() string {
	if q.p == nil {
		return ""
	}
	var s []string
	for _, v := range *q.p {
		s = append(s, strconv.Quote(v))
	}
	return strings.Join(s, ", ")
}

func (q *quotedStrings) Set(v string) error {
	if !q.set { // the first value given replaces the default
		*q.p, q.set = nil, true
	}
	*q.p = append(*q.p, v)
	return nil
}

func (q *quotedStrings) Type() string { return "strings" }

// lossFlags binds the options every training command shares with the loss.
func lossFlags(f *pflag.FlagSet, sftNorm *string, proTemp *bool) {
	f.StringVar(sftNorm, "sft-norm", "mean", "SFT term on the best candidate's mean (docs/METHOD.md) or sum (PRO's reference) token log-probability")
	f.BoolVar(proTemp, "pro-temperature", false, "weigh PRO's terms by reward differences (PRO's reference) when the ranking comes with rewards")
}

// responseEndFlag binds --response-end; train and loss share it.
func responseEndFlag(f *pflag.FlagSet, p *string) {
	f.StringVar(p, "response-end", "", `what each candidate ends with in training: eos (the model's EOS token, which RRHF's code and TRL's trainers append; in a conversation, what the chat template writes after an assistant message), none, or a text such as $'\n\nHuman:' (default: eos; none for --loss bt, since HF reads a reward at the last token that is not padding, and pad is often EOS)`)
}

// responseEnd resolves --response-end for m and the loss.
func responseEnd(spec string, l train.Loss, m *model.Model) (train.End, error) {
	if spec == "" {
		spec = "eos"
		if l.Kind == train.BT {
			spec = "none"
		}
	}
	e, err := train.ParseEnd(spec, m.Config.EOSTokenIDs)
	if err != nil {
		return e, fmt.Errorf("--response-end %q: %w", spec, err)
	}
	return e, nil
}

// required marks the flags a command cannot run without; cobra then names the missing ones
// before anything runs (an unset --out was "mkdir : no such file or directory").
func required(cmd *cobra.Command, names ...string) *cobra.Command {
	for _, n := range names {
		if err := cmd.MarkFlagRequired(n); err != nil {
			panic(err) // no flag of that name: a mistake in this file's callers
		}
	}
	return cmd
}
