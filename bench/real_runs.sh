#!/usr/bin/env bash
# The real fine-tuning runs recorded in bench/RESULTS.md, one track per CPU core.
#
#   bash bench/real_runs.sh bert-pretrained CHECKPOINT TOKENIZER  # GLUE x 3 seeds, CoNLL, QA
#   bash bench/real_runs.sh bert-scratch TOKENIZER                # the same, bert-mini from scratch
#   bash bench/real_runs.sh elmo ELMO_CHECKPOINT   # SST-2 and CoNLL: random embeddings / ELMo
#
# Data: bench/budget_data.py writes runs/data (SST-2 and SQuAD training subsets, whole dev sets).
# Every run uses one thread, so the tracks can share the 2-core machine.
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
        --out "$OUT/$name/glue" --seeds 1,2,3 --epochs 2 --learning-rate 1e-4
    $M finetune --task conll2003 --data $CONLL --model "$model" --tokenizer "$tokenizer" \
        --out "$OUT/$name/conll2003" --epochs 2 --learning-rate 1e-4
    $M evaluate --model "$OUT/$name/conll2003/seed-1" --file $CONLL/test.txt \
        --out "$OUT/$name/conll2003/test"
    $M finetune --task squad --data runs/data/squad --model "$model" --tokenizer "$tokenizer" \
        --out "$OUT/$name/squad" --epochs 2 --learning-rate 1e-4 --max-seq-length 256
}

elmo_track() {
    local elmo=$1
    # (a) random embeddings + biLSTM, (b) ELMo + biLSTM, (c) ELMo + bag-of-embeddings,
    # (d) [word embeddings; ELMo] + biLSTM (Peters et al. 2018, section 3.3)
    for run in "random-embeddings bilstm random" "$elmo bilstm elmo" \
        "$elmo bag-of-embeddings elmo" "$elmo bilstm elmo+words --elmo-word-embeddings"; do
        set -- $run
        [ -e "$OUT/elmo/sst2-$3-$2/summary.json" ] ||  # finished runs are kept
            $M finetune --task sst2 --data runs/data/glue --model "$1" --downstream "$2" ${4:-} \
                --whitespace-tokens --epochs 5 --seeds 1,2,3 --out "$OUT/elmo/sst2-$3-$2"
        [ -e "$OUT/elmo/conll2003-$3-$2/summary.json" ] ||
            $M finetune --task conll2003 --data $CONLL --model "$1" --downstream "$2" ${4:-} \
                --epochs 5 --out "$OUT/elmo/conll2003-$3-$2"
    done
}

case ${1:-} in
    bert-pretrained) bert_track pretrained "$2" "$3" ;;
    bert-scratch) bert_track scratch bert-mini "$2" ;;
    elmo) elmo_track "$2" ;;
    *) echo "usage: $0 bert-pretrained CHECKPOINT TOKENIZER | bert-scratch TOKENIZER | elmo ELMO_CHECKPOINT" >&2; exit 2 ;;
esac
