#!/usr/bin/env bash
# Regenerates the embedded default's base model (internal/assets/models/base) from text that
# can be had here, and the demo's evaluator (models/rm), every step seeded:
#   - the HH-RLHF sample's dialogues (chosen and rejected) of the base, judge and evaluator parts
#     of the fixed split (the align and test parts stay unseen), three copies;
#   - WordNet 3.0 glosses and examples (Debian wordnet-base, WordNet 3.0 licence);
#   - fortunes (Debian fortunes, BSD-style), the prose files only.
# dict-gcide is left out: it is GPL, and a model trained on it would carry that question.
# Every entry (dialogue, synset, fortune) with a word of the List of Dirty, Naughty, Obscene and
# Otherwise Bad Words is left out, as C4 was filtered (data corpus --drop-offensive).
# Then a byte-level BPE tokenizer (4096) and a 5.4M-parameter LLaMA pre-trained for one epoch,
# and from it a Bradley-Terry reward model trained on the human labels of the judge and
# evaluator parts (the demo's evaluator; alignment never sees it).
# On this project's 2-core machine it takes about 75 minutes. The sources and their licences are
# written to internal/assets/models/SOURCES.md.
# Usage: scripts/make-assets.sh [WORK_DIR]   (a WORK_DIR from an interrupted run is resumed)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
OUT=internal/assets/models
mkdir -p "$WORK"
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/games/fortunes/wisdom ]; then
  echo "installing the text sources (Debian wordnet-base, fortunes)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get install -y -q wordnet-base fortunes >/dev/null
fi
go build -o "$WORK/cyclealign" ./cmd/cyclealign
C="$WORK/cyclealign"
HH=internal/assets/hh-rlhf/harmless-base-test.shared.jsonl.gz
$C data split --hh "$HH" --out "$WORK/split"
S="$WORK/split"
$C data corpus --out "$WORK/corpus.jsonl" --hh "$S/base.jsonl,$S/judge.jsonl,$S/evaluator.jsonl" --hh-repeat 3 --drop-offensive \
  --wordnet /usr/share/wordnet --fortunes /usr/share/games/fortunes --seed 1 | tee "$WORK/corpus.txt"
[ -f "$WORK/tokenizer/tokenizer.json" ] || $C tokenizer train --vocab-size 4096 --out "$WORK/tokenizer" "$WORK/corpus.jsonl"
$C pretrain --tokenizer "$WORK/tokenizer" --data "$WORK/corpus.jsonl" --out "$WORK/base" \
  --hidden 256 --layers 6 --heads 8 --kv-heads 4 --intermediate 688 --max-len 256 \
  --epochs 1 --batch-size 16 --lr 2e-3 --seed 1 --save-every 100
cat "$S/judge.jsonl" "$S/evaluator.jsonl" > "$WORK/rm-train.jsonl"
$C train-rm --base "$WORK/base" --data "$WORK/rm-train.jsonl" --eval-data "$S/test.jsonl" --out "$WORK/rm" \
  --epochs 2 --lr 3e-4 --batch-size 16 --seed 1
rm -rf "$OUT"
mkdir -p "$OUT/base" "$OUT/rm"
cp "$WORK/base"/{config.json,model.safetensors,tokenizer.json,metrics.jsonl} "$OUT/base/"
cp "$WORK/rm"/{config.json,model.safetensors,tokenizer.json,metrics.jsonl,rm_eval.json} "$OUT/rm/"
# The sources' notices travel with what was made from them.
cp /usr/share/doc/wordnet-base/copyright "$OUT/LICENSE.wordnet"
cp /usr/share/doc/fortunes/copyright "$OUT/LICENSE.fortunes"
{
  echo "# Sources of the embedded base model"
  echo
  echo "Built by scripts/make-assets.sh on $(date -u +%Y-%m-%d) (Debian $(cat /etc/debian_version))."
  echo "Pre-training corpus (documents, characters; entries left out for a word of the List of Dirty,"
  echo "Naughty, Obscene and Otherwise Bad Words, npm naughty-words 1.2.0, as C4 was filtered):"
  echo
  echo '```'
  cat "$WORK/corpus.txt"
  echo '```'
  echo
  echo "| source | package | version | licence |"
  echo "|---|---|---|---|"
  echo "| HH-RLHF harmless-base test sample, split parts base+judge+evaluator (align and test unseen) | ../hh-rlhf | Anthropic/hh-rlhf | MIT (../hh-rlhf/LICENSE) |"
  echo "| WordNet 3.0 glosses and examples | wordnet-base | $(dpkg-query -W -f '${Version}' wordnet-base) | WordNet 3.0 licence (permissive, notice kept: WordNet 3.0 Copyright 2006 by Princeton University) |"
  echo "| fortune prose files: computers cookie definitions education food fortunes goedel humorists kids law linux literature love magic medicine miscellaneous news paradoxum people pets platitudes pratchett riddles science songs-poems sports startrek tao wisdom work zippy | fortunes | $(dpkg-query -W -f '${Version}' fortunes) | BSD-style (/usr/share/doc/fortunes/copyright) |"
  echo "| filter (entries with one of its words left out) | List of Dirty, Naughty, Obscene and Otherwise Bad Words, English (npm naughty-words) | 1.2.0 | CC BY 4.0 (internal/lexicon/LDNOOBW.LICENSE) |"
  echo
  echo "rm/, the demo's evaluator: a Bradley-Terry reward model from base/ (train-rm, 2 epochs, lr 3e-4,"
  echo "seed 1) on the human labels of the judge and evaluator parts of ../hh-rlhf; held-out accuracy"
  echo "on the test part in rm/rm_eval.json."
} > "$OUT/SOURCES.md"
cat "$OUT/SOURCES.md"
