package train

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readLatest(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, latestFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestResaveNeverRemovesTheLiveCheckpoint: saving the step that "latest" names again (train
// does so when interrupted right after a periodic save) writes a new revision and moves the
// pointer; the checkpoint the pointer named stays whole until then, so a kill at any moment
// leaves a loadable run. Stale pointer temporaries are cleaned up.
func TestResaveNeverRemovesTheLiveCheckpoint(t *testing.T) {
	tr := NewTrainer(loadTiny(t), Loss{Kind: PRO, SFTWeight: 0.5}, DefaultOptimizer())
	dir := t.TempDir()
	if err := tr.SaveCheckpoint(dir, State{Step: 3}, 2, nil); err != nil {
		t.Fatal(err)
	}
	first := readLatest(t, dir)
	os.WriteFile(filepath.Join(dir, "."+latestFile+".tmp12345"), []byte("step-0"), 0o644)
	if err := tr.SaveCheckpoint(dir, State{Step: 3}, 2, nil); err != nil {
		t.Fatal(err)
	}
	second := readLatest(t, dir)
	if second == first {
		t.Fatalf("re-saving step 3 replaced %s in place (removed before the new one existed)", first)
	}
	for _, name := range []string{first, second} {
		if _, err := os.Stat(filepath.Join(dir, name, "state.json")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "."+latestFile+".tmp12345")); err == nil {
		t.Error("a stale .latest.tmp file was left behind")
	}
	// More saves prune the oldest, never the live one.
	for _, step := range []int{4, 4, 5} {
		if err := tr.SaveCheckpoint(dir, State{Step: step}, 2, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := completeCheckpoints(dir); len(got) != 2 || got[1] != readLatest(t, dir) || got[1] != "step-00000005" || got[0] != "step-00000004.r2" {
		t.Fatalf("after pruning: %v, latest %s", got, readLatest(t, dir))
	}
}

func TestLatestPointerIsConfinedAndRecovered(t *testing.T) {
	tr := NewTrainer(loadTiny(t), Loss{Kind: PRO, SFTWeight: 0.5}, DefaultOptimizer())
	dir := t.TempDir()
	for _, step := range []int{1, 2} {
		if err := tr.SaveCheckpoint(dir, State{Step: step}, 3, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{"../../..", "/etc", "step-00000002/../../x"} {
		os.WriteFile(filepath.Join(dir, latestFile), []byte(bad+"\n"), 0o644)
		if _, _, _, err := tr.LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "not a checkpoint name") {
			t.Errorf("latest = %q: got %v, want a refusal", bad, err)
		}
	}
	os.Remove(filepath.Join(dir, latestFile))
	st, ck, found, err := tr.LoadCheckpoint(dir)
	if err != nil || !found || st.Step != 2 || filepath.Base(ck) != "step-00000002" {
		t.Fatalf("without the pointer: step %d from %s, found %v, err %v; want step 2", st.Step, ck, found, err)
	}
}

// TestResumeWithoutCheckpointsRefuses: a run whose checkpoints are gone but whose metrics
// record checkpointed steps must not silently start again from step 0.
func TestResumeWithoutCheckpointsRefuses(t *testing.T) {
	m := loadTiny(t)
	data := moreExamples(t)
	opt := DefaultOptimizer()
	ro := RunOptions{Epochs: 1, BatchSize: 2, GradAccum: 1, Seed: 1, SaveEvery: 1, Keep: 1, Out: t.TempDir(), StopAfter: 2}
	opt.TotalSteps = ro.TotalSteps(len(data))
	if _, err := Run(context.Background(), NewTrainer(m, Loss{Kind: PRO, SFTWeight: 0.5}, opt), data, ro); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(ro.Out, "checkpoints"))
	ro.StopAfter = 0
	_, err := Run(context.Background(), NewTrainer(loadTiny(t), Loss{Kind: PRO, SFTWeight: 0.5}, opt), data, ro)
	if err == nil || !strings.Contains(err.Error(), "metrics.jsonl") || !strings.Contains(err.Error(), "no checkpoint") {
		t.Fatalf("got %v, want a refusal naming metrics.jsonl", err)
	}
}

func TestTruncateJSONLRefusesACorruptMiddleLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	os.WriteFile(p, []byte("{\"step\":1}\n{\"step\":2, garbage\n{\"step\":3}\n"), 0o644)
	if err := TruncateJSONL(p, "step", 3); err == nil || !strings.Contains(err.Error(), p+":2:") {
		t.Fatalf("corrupt line 2: got %v, want an error naming %s:2", err, p)
	}
	// A last line cut short by a kill is dropped; the others stay.
	os.WriteFile(p, []byte("{\"step\":1}\n{\"step\":2}\n{\"step\":3, \"cut"), 0o644)
	if err := TruncateJSONL(p, "step", 5); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "{\"step\":1}\n{\"step\":2}\n" {
		t.Fatalf("after truncation: %q", b)
	}
}
