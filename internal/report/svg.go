// Package report renders a run directory (of align or of train) as one self-contained HTML
// page (inline SVG plots drawn by gonum/plot, no scripts, no external fonts) and compares
// several runs.
package report

import (
	"bytes"
	"fmt"
	"html"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Series is one line of a chart.
type Series struct {
	Name string
	X, Y []float64
}

// Chart is a line chart of several series.
type Chart struct {
	Title, XLabel string
	Series        []Series
	NonNegative   bool // counts, costs and rates: the y axis starts at 0
	IntegerX      bool // steps: whole-number ticks only
}

var palette = []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {255, 127, 14, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {23, 190, 207, 255}}

// Lines that coincide stay visible: each series has its own dash pattern and marker too.
var dashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}, {vg.Points(8), vg.Points(2), vg.Points(2), vg.Points(2)}}

var glyphs = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.CrossGlyph{},
	draw.PlusGlyph{}, draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// The sans variant of the Liberation fonts gonum/plot ships and measures text with; the SVG
// only names the family (nothing is loaded from outside).
func init() { plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"} }

// HTML renders the chart as inline SVG with its legend below it (never on the data).
func (c Chart) HTML() string {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), math.Inf(-1)
	var legend strings.Builder
	for i, s := range c.Series {
		var pts plotter.XYs
		for j := range s.X {
			if finite(s.Y[j]) {
				pts = append(pts, plotter.XY{X: s.X[j], Y: s.Y[j]})
				lo, hi = math.Min(lo, s.Y[j]), math.Max(hi, s.Y[j])
			}
		}
		if len(pts) == 0 {
			continue
		}
		col := palette[i%len(palette)]
		line, err := plotter.NewLine(pts)
		if err != nil {
			continue
		}
		line.Color, line.Dashes, line.Width = col, dashes[i%len(dashes)], vg.Points(1.5)
		p.Add(line)
		if len(pts) <= 40 {
			sc, err := plotter.NewScatter(pts)
			if err == nil {
				sc.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(2.5), Shape: glyphs[i%len(glyphs)]}
				p.Add(sc)
			}
		}
		fmt.Fprintf(&legend, `<span style="color:rgb(%d,%d,%d)">%s %s</span> `, col.R, col.G, col.B,
			[]string{"━", "╍", "┅", "━·"}[i%len(dashes)], html.EscapeString(s.Name))
	}
	if math.IsInf(lo, 1) {
		return fmt.Sprintf(`<figure class="plot"><figcaption><b>%s</b>: no data</figcaption></figure>`, html.EscapeString(c.Title))
	}
	switch {
	case c.NonNegative && lo >= 0:
		p.Y.Min, p.Y.Max = 0, math.Max(hi*1.05, 1e-9)
	case hi == lo: // a constant series: a band around it, not a range of ±1 around nothing
		pad := math.Max(math.Abs(lo)*0.1, 0.5)
		p.Y.Min, p.Y.Max = lo-pad, hi+pad
	}
	if c.NonNegative && hi == 0 {
		p.Y.Max = 1
	}
	if c.IntegerX {
		p.X.Tick.Marker = integerTicks{}
	}
	canvas := vgsvg.New(13*vg.Centimeter, 7*vg.Centimeter)
	p.Draw(draw.New(canvas))
	var buf bytes.Buffer
	if _, err := canvas.WriteTo(&buf); err != nil {
		return ""
	}
	svg := buf.String()
	if i := strings.Index(svg, "<svg"); i > 0 { // inline: no XML prologue
		svg = svg[i:]
	}
	return `<figure class="plot">` + svg + `<figcaption>` + legend.String() + `</figcaption></figure>`
}

// integerTicks labels whole numbers only (steps), at most about ten of them.
type integerTicks struct{}

func (integerTicks) Ticks(min, max float64) []plot.Tick {
	first, last := math.Ceil(min), math.Floor(max)
	if last < first {
		return []plot.Tick{{Value: min, Label: fmt.Sprintf("%g", min)}}
	}
	step := math.Max(1, math.Ceil((last-first+1)/10))
	var out []plot.Tick
	for v := first; v <= last; v += step {
		out = append(out, plot.Tick{Value: v, Label: fmt.Sprintf("%d", int(v))})
	}
	return out
}
