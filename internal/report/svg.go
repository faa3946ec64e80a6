// Package report renders a run directory as one self-contained HTML page (inline SVG plots,
// no scripts, no external fonts) and compares several runs.
package report

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Series is one line of a chart.
type Series struct {
	Name string
	X, Y []float64
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// LineChart draws series as an inline SVG with axes, ticks and a legend.
func LineChart(title, xLabel string, series []Series) string {
	const W, H, L, R, T, B = 560.0, 300.0, 56.0, 16.0, 28.0, 44.0
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for i := range s.X {
			if math.IsNaN(s.Y[i]) || math.IsInf(s.Y[i], 0) {
				continue
			}
			xmin, xmax = math.Min(xmin, s.X[i]), math.Max(xmax, s.X[i])
			ymin, ymax = math.Min(ymin, s.Y[i]), math.Max(ymax, s.Y[i])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %g %g" width="%g" height="%g" role="img" aria-label="%s">`, W, H, W, H, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%g" y="18" font-size="14" font-weight="bold">%s</text>`, L, html.EscapeString(title))
	if math.IsInf(xmin, 1) {
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="12" fill="#888">no data</text></svg>`, W/2-24, H/2)
		return b.String()
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	if ymax == ymin {
		ymin, ymax = ymin-1, ymax+1
	}
	pad := (ymax - ymin) * 0.05
	ymin, ymax = ymin-pad, ymax+pad
	px := func(x float64) float64 { return L + (x-xmin)/(xmax-xmin)*(W-L-R) }
	py := func(y float64) float64 { return H - B - (y-ymin)/(ymax-ymin)*(H-T-B) }
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#999"/>`, L, T, W-L-R, H-T-B)
	for i := 0; i <= 4; i++ {
		yv := ymin + (ymax-ymin)*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#eee"/>`, L, W-R, py(yv), py(yv))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" font-size="10" text-anchor="end">%s</text>`, L-4, py(yv)+3, tick(yv))
	}
	// Steps are whole numbers: label x at whole numbers, about five of them.
	xstep := math.Max(1, math.Ceil((xmax-xmin)/4))
	for xv := math.Ceil(xmin); xv <= xmax; xv += xstep {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" font-size="10" text-anchor="middle">%g</text>`, px(xv), H-B+14, xv)
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="11" text-anchor="middle">%s</text>`, L+(W-L-R)/2, H-8, html.EscapeString(xLabel))
	for k, s := range series {
		col := palette[k%len(palette)]
		var pts []string
		for i := range s.X {
			if !math.IsNaN(s.Y[i]) && !math.IsInf(s.Y[i], 0) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[i]), py(s.Y[i])))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, col, strings.Join(pts, " "))
		for _, p := range pts {
			xy := strings.Split(p, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.2" fill="%s"/>`, xy[0], xy[1], col)
		}
		fmt.Fprintf(&b, `<rect x="%g" y="%d" width="10" height="3" fill="%s"/><text x="%g" y="%d" font-size="10">%s</text>`,
			W-R-130, int(T)+8+14*k, col, W-R-116, int(T)+12+14*k, html.EscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func tick(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 1000 || a < 0.01:
		return fmt.Sprintf("%.2g", v)
	case a >= 10:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
