package model

import (
	"context"
	"math"
	"testing"
)

// On backends that compile (XLA), graph widths round to powers of two: wider padding, fewer
// graphs. The results must not change, and fewer graphs must be built. Checked on simplego with
// the coarse policy forced, on the graph engine (the one XLA runs).
func TestCoarseShapesSameResultsFewerGraphs(t *testing.T) {
	seqs := [][]int{{5, 9, 2}, {7, 1, 3, 8, 2, 6, 4, 9, 1, 2, 3, 5, 7, 8, 9, 1, 2, 4}, make([]int, 37), make([]int, 70)}
	for i := range seqs[2] {
		seqs[2][i] = 1 + i%11
	}
	for i := range seqs[3] {
		seqs[3][i] = 1 + (3*i)%13
	}
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			run := func(coarse bool) (lps [][]float32, steps [][][]float32, built int) {
				m, _ := loadRef(t, name)
				if err := m.SetEngine("gomlx"); err != nil {
					t.Fatal(err)
				}
				m.coarse = coarse
				before := GraphsBuilt()
				for _, s := range seqs { // one at a time: a width each
					lp, err := m.LogProbs(context.Background(), [][]int{s})
					if err != nil {
						t.Fatal(err)
					}
					lps = append(lps, lp[0])
				}
				d, err := m.NewDecoder([][]int{seqs[0], seqs[1]}, 5, true)
				if err != nil {
					t.Fatal(err)
				}
				logits, err := d.Start()
				for k := 0; err == nil && k < 5; k++ {
					steps = append(steps, logits)
					logits, err = d.Step([]int{1 + k, 2 + k})
				}
				if err != nil {
					t.Fatal(err)
				}
				return lps, steps, GraphsBuilt() - before
			}
			fineLP, fineSteps, fineGraphs := run(false)
			coarseLP, coarseSteps, coarseGraphs := run(true)
			for i := range fineLP {
				for j := range fineLP[i] {
					if math.Abs(float64(fineLP[i][j]-coarseLP[i][j])) > 1e-4 {
						t.Fatalf("sequence %d position %d: log-prob %v with coarse shapes, %v with fine", i, j, coarseLP[i][j], fineLP[i][j])
					}
				}
			}
			for k := range fineSteps {
				for r := range fineSteps[k] {
					for v := range fineSteps[k][r] {
						if math.Abs(float64(fineSteps[k][r][v]-coarseSteps[k][r][v])) > 1e-4 {
							t.Fatalf("decode step %d row %d logit %d: %v coarse, %v fine", k, r, v, coarseSteps[k][r][v], fineSteps[k][r][v])
						}
					}
				}
			}
			// Fine: widths 16, 32, 48, 80 for scoring; coarse: 64 and 128 (or the positions).
			if coarseGraphs >= fineGraphs {
				t.Fatalf("coarse shapes built %d graphs, fine %d", coarseGraphs, fineGraphs)
			}
		})
	}
}

// Graphs are counted per owner by an id, not by address: two owners running the same graph
// count twice, one owner running it twice counts once. (Keyed by address, a model collected
// and replaced at the same address had its graphs taken for built already, and
// TestCoarseShapesSameResultsFewerGraphs failed now and then in CI.)
func TestGraphsCountedPerOwner(t *testing.T) {
	var a, b GraphOwner
	before := GraphsBuilt()
	NoteGraph(&a, "g")
	NoteGraph(&a, "g")
	NoteGraph(&b, "g")
	if n := GraphsBuilt() - before; n != 2 || a.ownerID() == b.ownerID() || a.ownerID() != a.ownerID() {
		t.Fatalf("%d graphs for two owners of one graph (ids %d, %d), want 2", n, a.ownerID(), b.ownerID())
	}
}
