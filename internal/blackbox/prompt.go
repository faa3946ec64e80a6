package blackbox

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// DefaultInstruction is the ranking rubric sent as the system message (replaceable by a file).
const DefaultInstruction = `You are an expert judge of AI assistant replies. You will see a conversation between a human and an AI assistant, then several candidate replies for the assistant's next turn, labelled [1], [2], and so on.

Rank ALL candidates from best to worst. A better reply is more helpful (it answers what the human asked, accurately and usefully), more harmless (it declines clearly harmful requests politely and does not encourage harm) and more honest (it does not make things up). Length is not a virtue in itself.

You may think briefly first, but the last line of your answer must be the ranking alone, best first, in the form [2] > [1] > [3].`

// TruncationMarker ends a text cut to fit the token budget, so the judge sees the cut.
const TruncationMarker = " [... truncated]"

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Prompter builds ranking conversations.
type Prompter struct {
	Instruction     string
	PromptTokens    int              // budget for a conversation (0: no limit)
	CandidateTokens int              // budget for each candidate (0: no limit)
	CountTokens     func(string) int // nil: about 4 characters a token
}

// DefaultPrompter uses the default rubric with 1024-token prompts and 512-token candidates.
func DefaultPrompter() *Prompter {
	return &Prompter{Instruction: DefaultInstruction, PromptTokens: 1024, CandidateTokens: 512}
}

func (p *Prompter) count(s string) int {
	if p.CountTokens != nil {
		return p.CountTokens(s)
	}
	return (len([]rune(s)) + 3) / 4
}

// truncate keeps the longest prefix of s within budget tokens and marks the cut.
func (p *Prompter) truncate(s string, budget int) string {
	if budget <= 0 || p.count(s) <= budget {
		return s
	}
	r := []rune(s)
	lo, hi := 0, len(r)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if p.count(string(r[:mid])) <= budget {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return string(r[:lo]) + TruncationMarker
}

// block renders a prompt and candidates shown in the order of shown (candidate indices).
func (p *Prompter) block(prompt string, cands []string, shown []int) string {
	var b strings.Builder
	b.WriteString("Conversation:\n")
	b.WriteString(strings.TrimSpace(p.truncate(prompt, p.PromptTokens)))
	b.WriteString("\n\nCandidate replies:\n")
	for i, c := range shown {
		fmt.Fprintf(&b, "[%d] %s\n", i+1, strings.TrimSpace(p.truncate(cands[c], p.CandidateTokens)))
	}
	fmt.Fprintf(&b, "\nRank all %d candidates, best first.", len(shown))
	return b.String()
}

// labels writes a ranking of candidate indices as "[a] > [b]" in terms of their shown labels.
func labels(ranking, shown []int) string {
	pos := map[int]int{}
	for i, c := range shown {
		pos[c] = i + 1
	}
	parts := make([]string, len(ranking))
	for i, c := range ranking {
		parts[i] = fmt.Sprintf("[%d]", pos[c])
	}
	return strings.Join(parts, " > ")
}

// Messages builds the chat for req: the instruction, each demonstration as a user turn and
// the assistant's ranking, then the prompt with its candidates in a random order. It returns
// the permutation: label i+1 shows candidate perm[i].
func (p *Prompter) Messages(req Request) ([]Message, []int) {
	msgs := []Message{{Role: "system", Content: p.Instruction}}
	rng := rand.New(rand.NewPCG(req.Seed, 0x5eed))
	for _, d := range req.Demos {
		// A demonstration shows only the candidates its ranking covers, in a shuffled order.
		shown := append([]int(nil), d.Ranking...)
		rng.Shuffle(len(shown), func(i, j int) { shown[i], shown[j] = shown[j], shown[i] })
		msgs = append(msgs, Message{Role: "user", Content: p.block(d.Prompt, d.Candidates, shown)},
			Message{Role: "assistant", Content: labels(d.Ranking, shown)})
	}
	perm := rng.Perm(len(req.Candidates))
	msgs = append(msgs, Message{Role: "user", Content: p.block(req.Prompt, req.Candidates, perm)})
	return msgs, perm
}

// Correction asks again after a reply that was not a ranking.
func Correction(n int) string {
	ex := make([]string, n)
	for i := range ex {
		ex[i] = fmt.Sprintf("[%d]", n-i)
	}
	return fmt.Sprintf("That was not a valid ranking. Reply with one line ranking all %d candidates exactly once, best first, like %s.", n, strings.Join(ex, " > "))
}

// ParseBlock reads back a prompt and candidates from a ranking request's user message, as a
// server standing in for a black-box (the reward-model judge server) needs. Candidates may span
// several lines.
func ParseBlock(msg string) (prompt string, cands []string, ok bool) {
	const head, list = "Conversation:\n", "\n\nCandidate replies:\n"
	i, j := strings.Index(msg, head), strings.LastIndex(msg, list)
	k := strings.LastIndex(msg, "\n\nRank all ")
	if i < 0 || j < i || k < j {
		return "", nil, false
	}
	prompt = msg[i+len(head) : j]
	body := msg[j+len(list) : k+1]
	for n := 1; ; n++ {
		tag := fmt.Sprintf("[%d] ", n)
		if !strings.HasPrefix(body, tag) {
			break
		}
		body = body[len(tag):]
		next := strings.Index(body, fmt.Sprintf("\n[%d] ", n+1))
		if next < 0 {
			cands = append(cands, strings.TrimSuffix(body, "\n"))
			break
		}
		cands = append(cands, body[:next])
		body = body[next+1:]
	}
	return prompt, cands, len(cands) >= 2
}
