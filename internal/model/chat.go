package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/cyclealign/cyclealign/internal/chat"
	"github.com/cyclealign/cyclealign/internal/files"
)

// chatFiles are the files besides config.json and tokenizer.json that say how a model is
// talked to; Save carries them over so an aligned model keeps its template and its turn ends.
var chatFiles = []string{"tokenizer_config.json", "chat_template.jinja", "generation_config.json", "special_tokens_map.json"}

// loadChat reads the model directory's chat template and every id that ends a reply:
// config.json's eos_token_id, generation_config.json's (an int or a list; Llama 3 lists two),
// the tokenizer's eos_token, and the special tokens of the template's turn end.
func (m *Model) loadChat(dir string) error {
	t, special, err := chat.Load(dir)
	if err != nil {
		return err
	}
	m.Chat = t
	ends := slices.Clone(m.Config.EOSTokenIDs)
	gen, err := generationEOS(dir)
	if err != nil {
		return err
	}
	ends = append(ends, gen...)
	if id, ok := m.Tokenizer.ID(special["eos_token"]); ok {
		ends = append(ends, id)
	}
	if t != nil {
		end, err := t.TurnEnd()
		if err != nil {
			return err
		}
		m.turnEnd = end
		for _, id := range m.Tokenizer.Encode(end, false) {
			if m.Tokenizer.IsSpecial(id) {
				m.turnEndIDs = append(m.turnEndIDs, id)
			}
		}
		ends = append(ends, m.turnEndIDs...)
	}
	// In order, config.json's first: its first id is the EOS a text reply is trained with.
	seen := map[int]bool{}
	for _, id := range ends {
		if !seen[id] {
			seen[id] = true
			m.endIDs = append(m.endIDs, id)
		}
	}
	return nil
}

// generationEOS reads generation_config.json's eos_token_id; a missing file has none.
func generationEOS(dir string) ([]int, error) {
	path := filepath.Join(dir, "generation_config.json")
	b, err := files.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var raw struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(raw.EOS) == 0 || string(raw.EOS) == "null" {
		return nil, nil
	}
	var one int
	if json.Unmarshal(raw.EOS, &one) == nil {
		return []int{one}, nil
	}
	var list []int
	if err := json.Unmarshal(raw.EOS, &list); err != nil {
		return nil, fmt.Errorf("%s: field eos_token_id: want an integer or a list of integers", path)
	}
	return list, nil
}

// EndIDs are the tokens that end a reply (see loadChat); a model built in memory has its
// config's EOS ids.
func (m *Model) EndIDs() []int {
	if m.endIDs == nil {
		return m.Config.EOSTokenIDs
	}
	return m.endIDs
}

// TurnEndIDs are the special tokens of the template's turn end (<|im_end|>, <|eot_id|>): they
// end a reply, and an n-gram ban never forbids them, as every message of a prompt ends with them.
func (m *Model) TurnEndIDs() []int { return m.turnEndIDs }

// TurnEnd is the text the chat template writes after an assistant message ("" without a
// template): what a reply that ended its turn is trained with.
func (m *Model) TurnEnd() string { return m.turnEnd }

// PromptIDs are the tokens the model continues for a prompt: a conversation rendered by the
// chat template with the generation prompt and encoded as apply_chat_template encodes it
// (special tokens matched, no BOS added, the template writes its own), or a text prompt in the
// HH format encoded with the tokenizer's special tokens.
func (m *Model) PromptIDs(p chat.Prompt) ([]int, error) {
	if p.Messages == nil {
		return m.Tokenizer.Encode(p.Text, true), nil
	}
	text, err := m.RenderChat(p.Messages, true, false)
	if err != nil {
		return nil, err
	}
	return m.Tokenizer.Encode(text, false), nil
}

// RenderChat renders messages with the model's chat template, or refuses when it has none.
func (m *Model) RenderChat(msgs []chat.Message, addGen, continueFinal bool) (string, error) {
	if m.Chat == nil {
		return "", fmt.Errorf("%s has no chat template (chat_template.jinja or tokenizer_config.json's chat_template) for a conversation", m.Name())
	}
	return m.Chat.Render(msgs, addGen, continueFinal)
}

// copyChatFiles copies the chat files of the directory the model was loaded from into dir.
func (m *Model) copyChatFiles(dir string) error {
	if m.Dir == "" || filepath.Clean(m.Dir) == filepath.Clean(dir) {
		return nil
	}
	for _, name := range chatFiles {
		b, err := files.ReadFile(filepath.Join(m.Dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := files.WriteAtomic(filepath.Join(dir, name), func(w io.Writer) error {
			_, err := w.Write(b)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}
