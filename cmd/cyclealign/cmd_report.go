package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cyclealign/cyclealign/internal/report"
)

func newReportCmd(g *globalOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "report RUN_DIR [--out FILE]",
		Short: "Write a self-contained HTML report of a run (curves, samples, configuration)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := report.Load(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(args[0], "report.html")
			}
			if err := os.WriteFile(out, []byte(r.HTML()), 0o644); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "output file (default RUN_DIR/report.html)")
	return cmd
}

func newCompareCmd(g *globalOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "compare RUN_DIR... [--out FILE]",
		Short: "Put several runs side by side: a table, and an HTML page with their curves",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var runs []*report.Run
			for _, d := range args {
				r, err := report.Load(d)
				if err != nil {
					return err
				}
				runs = append(runs, r)
			}
			table, page := report.Compare(runs)
			if out != "" {
				if err := os.WriteFile(out, []byte(page), 0o644); err != nil {
					return err
				}
			}
			fmt.Fprint(cmd.OutOrStdout(), table)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "also write the comparison page here")
	return cmd
}
