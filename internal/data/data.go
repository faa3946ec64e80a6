// Package data reads the project's text data: HH-RLHF preference files (chosen/rejected
// dialogues, .jsonl or .jsonl.gz) and plain prompt files, naming the line of any bad row.
package data

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/cyclealign/cyclealign/internal/files"
)

// AssistantTag starts an assistant turn in the HH dialogue format.
const AssistantTag = "\n\nAssistant:"

// Pair is one preference: a prompt (the dialogue up to and including the last
// "\n\nAssistant:") and two final responses.
type Pair struct {
	Prompt   string `json:"prompt"`
	Chosen   string `json:"chosen"`
	Rejected string `json:"rejected"`
}

// SplitDialogue cuts a dialogue after its last "\n\nAssistant:".
func SplitDialogue(s string) (prompt, response string, ok bool) {
	i := strings.LastIndex(s, AssistantTag)
	if i < 0 {
		return "", "", false
	}
	return s[:i+len(AssistantTag)], s[i+len(AssistantTag):], true
}

// open reads plain or gzip-compressed files (by the .gz suffix). A read error of the gzip
// stream is kept in the reader, so that eachLine reports it rather than the cut-off line it left.
func open(path string) (*lineSource, error) {
	f, err := files.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".gz") {
		return &lineSource{r: f, f: f}, nil
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &lineSource{r: z, f: f}, nil
}

// lineSource is a file's (decompressed) bytes; err is the first read error other than EOF.
type lineSource struct {
	r   io.Reader
	f   io.Closer
	err error
}

func (s *lineSource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *lineSource) Close() error { return s.f.Close() }

// eachLine calls fn with every non-blank line and its 1-based number.
func eachLine(path string, fn func(line []byte, n int) error) error {
	r, err := open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		if r.err != nil { // the scanner hands out what it had before the error: a cut-off line
			break
		}
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		if err := fn(sc.Bytes(), n); err != nil {
			return fmt.Errorf("%s: line %d: %w", path, n, err)
		}
	}
	if r.err != nil {
		return fmt.Errorf("%s: reading the file failed (truncated or corrupt?): %w", path, r.err)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ReadHH reads HH-RLHF rows {"chosen": dialogue, "rejected": dialogue}. Rows whose chosen and
// rejected prompts differ are skipped and counted; a file with no pair left is an error.
func ReadHH(path string) (pairs []Pair, skipped int, err error) {
	err = eachLine(path, func(line []byte, _ int) error {
		p, ok, err := parseHH(line)
		if err != nil {
			return err
		}
		if !ok {
			skipped++
			return nil
		}
		pairs = append(pairs, p)
		return nil
	})
	switch {
	case err != nil || len(pairs) > 0:
	case skipped > 0:
		err = fmt.Errorf("%s: no HH-RLHF pairs: in all %d rows the chosen and rejected prompts differ", path, skipped)
	default:
		err = fmt.Errorf("%s: no HH-RLHF pairs", path)
	}
	return pairs, skipped, err
}

func parseHH(line []byte) (Pair, bool, error) {
	var row struct {
		Chosen   *string `json:"chosen"`
		Rejected *string `json:"rejected"`
	}
	if err := json.Unmarshal(line, &row); err != nil {
		return Pair{}, false, fmt.Errorf("invalid JSON: %w", err)
	}
	if row.Chosen == nil || row.Rejected == nil {
		return Pair{}, false, fmt.Errorf(`want "chosen" and "rejected"`)
	}
	cp, cr, ok1 := SplitDialogue(*row.Chosen)
	rp, rr, ok2 := SplitDialogue(*row.Rejected)
	if !ok1 || !ok2 {
		return Pair{}, false, fmt.Errorf("dialogue has no %q turn", strings.TrimSpace(AssistantTag))
	}
	if cp != rp {
		return Pair{}, false, nil
	}
	return Pair{Prompt: cp, Chosen: cr, Rejected: rr}, true, nil
}

// ReadTexts reads training text from JSONL: {"text": ...} lines, or HH rows (their chosen and
// rejected dialogues both).
func ReadTexts(path string) ([]string, error) {
	var out []string
	err := eachLine(path, func(line []byte, _ int) error {
		var row struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(line, &row); err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		if row.Text != nil {
			out = append(out, *row.Text)
			return nil
		}
		p, ok, err := parseHH(line)
		if err != nil {
			return fmt.Errorf(`want "text", or "chosen" and "rejected": %w`, err)
		}
		if ok {
			out = append(out, p.Prompt+p.Chosen, p.Prompt+p.Rejected)
		}
		return nil
	})
	return out, err
}
