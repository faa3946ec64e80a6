package blackbox

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/cyclealign/cyclealign/internal/files"
)

// Price is a model's price in USD per million tokens.
type Price struct {
	InputPerMillion  float64 `json:"input_per_million"`
	OutputPerMillion float64 `json:"output_per_million"`
}

// Prices maps model names to prices.
type Prices map[string]Price

//go:embed prices.json
var defaultPrices []byte

// DefaultPrices is the table shipped with cyclealign.
func DefaultPrices() Prices {
	p, err := parsePrices(defaultPrices)
	if err != nil {
		panic(err)
	}
	return p
}

// LoadPrices reads a user's price table (the same JSON shape as the shipped one).
func LoadPrices(path string) (Prices, error) {
	b, err := files.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := parsePrices(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

func parsePrices(b []byte) (Prices, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	p := Prices{}
	for k, v := range raw {
		if strings.HasPrefix(k, "_") {
			continue
		}
		var pr Price
		if err := json.Unmarshal(v, &pr); err != nil {
			return nil, fmt.Errorf("model %q: %w", k, err)
		}
		p[k] = pr
	}
	return p, nil
}

// Cost estimates the price of a request; known is false for models not in the table.
func (p Prices) Cost(model string, in, out int) (cost float64, known bool) {
	pr, ok := p[model]
	if !ok {
		return 0, false
	}
	return (float64(in)*pr.InputPerMillion + float64(out)*pr.OutputPerMillion) / 1e6, true
}

// Budget tracks the estimated spend of a run against an optional limit.
type Budget struct {
	mu    sync.Mutex
	spent float64
	max   float64 // 0: none
}

// NewBudget starts at spent (a resumed run's previous spend) with limit max (0: none).
func NewBudget(spent, max float64) *Budget { return &Budget{spent: spent, max: max} }

func (b *Budget) check() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max > 0 && b.spent >= b.max {
		return fmt.Errorf("%w: spent $%.4f of $%.4f", ErrBudget, b.spent, b.max)
	}
	return nil
}

func (b *Budget) add(c float64) {
	b.mu.Lock()
	b.spent += c
	b.mu.Unlock()
}

// Spent is the estimated cost so far.
func (b *Budget) Spent() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spent
}
