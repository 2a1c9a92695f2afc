#!/usr/bin/env bash
# The real fine-tuning runs recorded in bench/RESULTS.md, one track per CPU core.
#
#   bash bench/real_runs.sh bert   BERT_CHECKPOINT TOKENIZER   # GLUE x 3 seeds, CoNLL, QA: pretrained and scratch
#   bash bench/real_runs.sh elmo   ELMO_CHECKPOINT             # SST-2 and CoNLL: random/ELMo x biLSTM/bag-of-embeddings
#
# Data: bench/budget_data.py writes runs/data (SST-2 and SQuAD training subsets, whole dev sets).
# Every run uses one thread, so the two tracks can share the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
[ -e "$TCMALLOC" ] && export LD_PRELOAD=$TCMALLOC
M=.venv/bin/muppets
CONLL=../shared/data/conll2003
OUT=${OUT:-runs/real}

bert_track() {
    local name=$1 model=$2 tokenizer=$3
    $M finetune --task glue --data runs/data/glue --model "$model" --tokenizer "$tokenizer" \
        --out "$OUT/$name/glue" --seeds 1,2,3 --epochs 3 --learning-rate 1e-4
    $M finetune --task conll2003 --data $CONLL --model "$model" --tokenizer "$tokenizer" \
        --out "$OUT/$name/conll2003" --epochs 3 --learning-rate 1e-4
    $M evaluate --model "$OUT/$name/conll2003/seed-1" --file $CONLL/test.txt \
        --out "$OUT/$name/conll2003/test"
    $M finetune --task squad --data runs/data/squad --model "$model" --tokenizer "$tokenizer" \
        --out "$OUT/$name/squad" --epochs 2 --learning-rate 1e-4
}

elmo_track() {
    local elmo=$1
    for model in random-embeddings "$elmo"; do
        local tag; tag=$([ "$model" = random-embeddings ] && echo random || echo elmo)
        for downstream in bilstm bag-of-embeddings; do
            $M finetune --task sst2 --data runs/data/glue --model "$model" --downstream $downstream \
                --whitespace-tokens --epochs 10 --seeds 1,2,3 --out "$OUT/elmo/sst2-$tag-$downstream"
            $M finetune --task conll2003 --data $CONLL --model "$model" --downstream $downstream \
                --epochs 10 --out "$OUT/elmo/conll2003-$tag-$downstream"
        done
    done
}

case ${1:-} in
    bert)
        bert_track pretrained "$2" "$3"
        bert_track scratch bert-mini "$3"
        ;;
    elmo) elmo_track "$2" ;;
    *) echo "usage: $0 bert CHECKPOINT TOKENIZER | elmo ELMO_CHECKPOINT" >&2; exit 2 ;;
esac
