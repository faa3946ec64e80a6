package data

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/files"
)

// EachRecord calls fn with every record of a dataset file and where it stands ("line 3",
// "row 3", 1-based): JSON lines (.jsonl, optionally gzipped), a JSON array (.json), or Parquet
// (.parquet), the files `datasets` writes and the Hub serves. Errors name the file and the place.
func EachRecord(path string, fn func(rec []byte, where string) error) error {
	if strings.HasSuffix(path, ".parquet") {
		return eachParquetRow(path, fn)
	}
	if !strings.HasSuffix(path, ".json") {
		return eachLine(path, func(line []byte, n int) error { return fn(line, fmt.Sprintf("line %d", n)) })
	}
	f, err := files.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return fmt.Errorf("%s: a .json dataset must be a JSON array of rows (JSON lines go in .jsonl)", path)
	}
	for n := 1; dec.More(); n++ {
		var rec json.RawMessage
		if err := dec.Decode(&rec); err != nil {
			return fmt.Errorf("%s: row %d: invalid JSON: %w", path, n, err)
		}
		if err := fn(rec, fmt.Sprintf("row %d", n)); err != nil {
			return fmt.Errorf("%s: row %d: %w", path, n, err)
		}
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// side is a prompt or a reply as TRL's datasets write it: a string, or a list of messages.
type side struct {
	text     *string
	messages []chat.Message
}

func (s *side) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var t string
		if err := json.Unmarshal(b, &t); err != nil {
			return err
		}
		s.text = &t
		return nil
	}
	if err := json.Unmarshal(b, &s.messages); err != nil {
		return fmt.Errorf("want a string or a list of {\"role\", \"content\"} messages")
	}
	return nil
}

func (s *side) set() bool { return s.text != nil || s.messages != nil }

// row is a record in any of the accepted formats.
type row struct {
	Prompt   side           `json:"prompt"`
	Messages []chat.Message `json:"messages"`
	Chosen   side           `json:"chosen"`
	Rejected side           `json:"rejected"`
	Text     *string        `json:"text"`
}

// parseRow reads a record, naming the field that does not parse.
func parseRow(rec []byte) (row, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec, &raw); err != nil {
		return row{}, fmt.Errorf("invalid JSON: %w", err)
	}
	var r row
	for name, dst := range map[string]any{"prompt": &r.Prompt, "messages": &r.Messages, "chosen": &r.Chosen, "rejected": &r.Rejected, "text": &r.Text} {
		if v, ok := raw[name]; ok && string(v) != "null" {
			if err := json.Unmarshal(v, dst); err != nil {
				return row{}, fmt.Errorf("field %q: %w", name, err)
			}
		}
	}
	return r, nil
}

// beforeLastAssistant is a conversation's turns before its last assistant turn (all of them
// when it has none): the prompt of a {"messages"} row, or of an implicit-prompt preference row.
func beforeLastAssistant(msgs []chat.Message) []chat.Message {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "assistant" {
			return msgs[:i]
		}
	}
	return msgs
}

// prompt returns the row's prompt in the formats TRL documents: {"prompt": text},
// {"prompt": [messages]}, {"messages": [...]} (the turns before the last assistant turn),
// preference rows with an explicit or implicit prompt, and HH rows (the dialogue up to its last
// "\n\nAssistant:").
func (r row) prompt() (chat.Prompt, error) {
	switch {
	case r.Prompt.text != nil:
		if *r.Prompt.text == "" {
			return chat.Prompt{}, fmt.Errorf(`field "prompt": empty`)
		}
		return chat.Prompt{Text: *r.Prompt.text}, nil
	case r.Prompt.messages != nil:
		return conversation("prompt", r.Prompt.messages)
	case r.Messages != nil:
		return conversation("messages", beforeLastAssistant(r.Messages))
	case r.Chosen.messages != nil:
		return conversation("chosen", beforeLastAssistant(r.Chosen.messages))
	case r.Chosen.text != nil:
		p, _, ok := SplitDialogue(*r.Chosen.text)
		if !ok {
			return chat.Prompt{}, fmt.Errorf(`field "chosen": dialogue has no %q turn`, strings.TrimSpace(AssistantTag))
		}
		return chat.Prompt{Text: p}, nil
	}
	return chat.Prompt{}, fmt.Errorf(`no prompt: want "prompt" (a text or messages), "messages", or a preference row's "chosen"`)
}

// conversation checks a prompt's messages: at least one, each with a role.
func conversation(field string, msgs []chat.Message) (chat.Prompt, error) {
	if len(msgs) == 0 {
		return chat.Prompt{}, fmt.Errorf("field %q: no turns before the assistant's", field)
	}
	for i, m := range msgs {
		if m.Role == "" {
			return chat.Prompt{}, fmt.Errorf("field %q: message %d has no role", field, i)
		}
	}
	return chat.Prompt{Messages: msgs}, nil
}

// ReadChatPrompts reads the prompts of a dataset in any accepted format (see row.prompt) from
// .jsonl(.gz) or .json. A file holds conversations or texts, not both: they are rendered and
// ended differently.
func ReadChatPrompts(path string) ([]chat.Prompt, error) {
	var out []chat.Prompt
	err := EachRecord(path, func(rec []byte, where string) error {
		r, err := parseRow(rec)
		if err != nil {
			return err
		}
		p, err := r.prompt()
		if err != nil {
			return err
		}
		if len(out) > 0 && (out[0].Messages == nil) != (p.Messages == nil) {
			return fmt.Errorf("a %s among %s: a file holds conversations or texts, not both", kindOf(p), kindOf(out[0]))
		}
		out = append(out, p)
		return nil
	})
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("%s: no prompts", path)
	}
	return out, err
}

func kindOf(p chat.Prompt) string {
	if p.Messages != nil {
		return "conversation"
	}
	return "text prompt"
}

// SplitPrompts returns prompts as texts, with the conversations' messages when they are conversations
// (nil otherwise): the texts are what a ranker or a report reads.
func SplitPrompts(ps []chat.Prompt) ([]string, [][]chat.Message) {
	texts := make([]string, len(ps))
	var convs [][]chat.Message
	for i, p := range ps {
		texts[i] = p.Plain()
		if p.Messages != nil {
			convs = append(convs, p.Messages)
		}
	}
	return texts, convs
}

// ReadEval reads held-out data for eval: HH-RLHF pairs (their prompts, and the pairs for
// preference accuracy), or prompts in any accepted format.
func ReadEval(path string) (prompts []string, convs [][]chat.Message, pairs []Pair, err error) {
	if pairs, _, err := ReadHH(path); err == nil {
		return Prompts(pairs), nil, pairs, nil
	}
	ps, err := ReadChatPrompts(path)
	if err != nil {
		return nil, nil, nil, err
	}
	prompts, convs = SplitPrompts(ps)
	return prompts, convs, nil, nil
}

// Preference reads a preference row as TRL documents it: {"prompt", "chosen", "rejected"},
// each a text or a list of messages, or chosen and rejected as whole conversations (an
// implicit prompt: their turns before the last assistant turn). ok is false for a record
// without "chosen" and "rejected".
func Preference(rec []byte) (prompt chat.Prompt, chosen, rejected string, ok bool, err error) {
	r, err := parseRow(rec)
	if err != nil || !r.Chosen.set() || !r.Rejected.set() {
		return prompt, "", "", false, err
	}
	reply := func(field string, s side) (string, error) {
		if s.text != nil {
			return *s.text, nil
		}
		for i := len(s.messages) - 1; i >= 0; i-- {
			if s.messages[i].Role == "assistant" {
				return s.messages[i].Content, nil
			}
		}
		return "", fmt.Errorf("field %q: no assistant message", field)
	}
	if chosen, err = reply("chosen", r.Chosen); err != nil {
		return prompt, "", "", true, err
	}
	if rejected, err = reply("rejected", r.Rejected); err != nil {
		return prompt, "", "", true, err
	}
	if r.Prompt.set() || r.Chosen.messages != nil {
		prompt, err = r.prompt()
		return prompt, chosen, rejected, true, err
	}
	// HH rows: both dialogues share the prompt up to the last "\n\nAssistant:".
	pair, same, err := parseHH(rec)
	switch {
	case err != nil:
		return prompt, "", "", true, err
	case !same:
		return prompt, "", "", true, fmt.Errorf(`"chosen" and "rejected" are neither replies to a "prompt" nor dialogues with the same prompt`)
	}
	return chat.Prompt{Text: pair.Prompt}, pair.Chosen, pair.Rejected, true, nil
}
