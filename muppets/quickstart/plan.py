"""How many fine-tuning runs the comparison's share of the budget holds, and what goes first
when it does not hold them all.

Every row trains on nested subsets of the training set (`label budgets`, the same sentences for
every row at a budget) with some seeds (and the BERT rows with each learning rate of a short
list, selected on dev). FinetuneConfig has no time cap, so each run's seconds are estimated
before it starts: tokens (SST-2 words x WORDPIECES_PER_WORD, plus 2) at a fixed cost per token
for each kind of run (COST), in units of the BERT pretraining throughput just measured on the
same machine. When the estimate of the whole plan is over the comparison's seconds, groups of
runs are dropped in DROP ORDER (drop_steps) until it fits, and each drop is a note the table
prints. The claims (BERT pretrained vs scratch, and the ELECTRA fine-tuned as the BERT rows:
every seed at every budget) go last, and they go together: the ELECTRA row is always run with
the BERT rows' budgets, seeds and learning rates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Row -> the kind of run, for COST and for the drop order.
CLAIMS = ("bert-finetuned", "bert-scratch", "electra-finetuned")  # every seed at every budget
CONLL_CLAIMS = ("conll-bert-finetuned", "conll-bert-scratch")
WORD_LEVEL = ("elmo-bilstm", "random-bilstm")  # every seed at the smallest budget
ONE_RUN = ("bert-frozen", "bag-of-embeddings")  # one seed at the largest budget
WORDPIECES_PER_WORD = 1.25  # SST-2 words -> WordPiece tokens (about, for the estimate)
# Seconds per token of a run, as multiples of 1 / (BERT pretraining tokens per second): a
# training token, a dev token (one evaluation per epoch), and a token featurized once per
# finetune call (the frozen ELMo's layers, cached, over the whole training set). Measured on the
# bundled sample, 2 shared cores, 1 thread.
COST = {
    "bert-finetuned": (1.2, 0.5, 0.0),
    "bert-frozen": (0.3, 0.5, 0.0),
    "bert-scratch": (1.2, 0.5, 0.0),
    "electra-finetuned": (1.2, 0.5, 0.0),  # the discriminator is bert-tiny's size
    "elmo-bilstm": (1.0, 1.0, 2.0),
    "random-bilstm": (1.4, 1.0, 0.0),
    "bag-of-embeddings": (0.1, 0.2, 0.0),
    "conll-bert-finetuned": (1.2, 0.5, 0.0),
    "conll-bert-scratch": (1.2, 0.5, 0.0),
}


@dataclass(frozen=True)
class Data:
    """What the estimate needs of one task's data."""

    examples: int  # training examples
    tokens_per_example: float
    eval_tokens: float  # dev (+ test) tokens, scored once an epoch


@dataclass
class Plan:
    runs: dict[str, dict[int | None, list[int]]]  # row -> budget (None: all) -> seeds
    rates: dict[str, int]  # row -> how many of its learning-rate candidates it runs
    seconds: float  # the estimate of everything planned
    notes: list[str] = field(default_factory=list)  # what was dropped, in the order dropped


def run_seconds(row: str, examples: int, epochs: int, data: Data, tokens_per_second: float):
    """One seed of one candidate: `epochs` passes over `examples` and a dev evaluation each."""
    train_cost, eval_cost, _ = (c / tokens_per_second for c in COST[row])
    return epochs * (examples * data.tokens_per_example * train_cost + data.eval_tokens * eval_cost)


def plan_seconds(plan_runs, rates, data, epochs, tokens_per_second) -> float:
    """The whole plan: every seed x candidate, plus the featurizing of each finetune call (one
    per distinct seed list of a row, as comparison.py groups them)."""
    total = 0.0
    for row, budgets in plan_runs.items():
        d = data[row]
        for budget, seeds in budgets.items():
            n = d.examples if budget is None else min(budget, d.examples)
            total += len(seeds) * rates[row] * run_seconds(row, n, epochs, d, tokens_per_second)
        calls = {tuple(seeds) for seeds in budgets.values() if seeds}
        once = COST[row][2] / tokens_per_second
        total += len(calls) * (d.examples * d.tokens_per_example + d.eval_tokens) * once
    return total


def full_plan(rows, budgets, seeds, conll_budgets, rates) -> tuple[dict, dict]:
    """Everything the comparison would run with time to spare (row -> budget -> seeds)."""
    runs: dict[str, dict] = {}
    for row in rows:
        if row in CLAIMS or row in WORD_LEVEL:
            runs[row] = {b: list(seeds) for b in budgets}
        elif row in CONLL_CLAIMS:
            runs[row] = {b: list(seeds) for b in conll_budgets}
        else:
            runs[row] = {budgets[-1]: list(seeds[:1])}
    return runs, {row: rates if row in CLAIMS + CONLL_CLAIMS else 1 for row in rows}


def budget_name(budget: int | None) -> str:
    return "all" if budget is None else f"{budget:,}"


def drop_steps(runs: dict, rates: dict) -> list[tuple[str, Callable]]:
    """The DROP ORDER: (note, change) pairs, least needed first. The word-level rows' extra seeds
    above the smallest budget are the first (planned only if the budget allows), the claims' last
    seeds the very last; before their larger budgets go, the claims run one seed fewer above the
    smallest budget at each step, down to one (a curve with fewer seeds rather than a point)."""
    steps = []

    def keep_first_seed(rows, where, keep=1):
        def change(runs, rates):
            for row in rows:
                for budget in runs.get(row, {}):
                    if where(row, budget):
                        runs[row][budget] = runs[row][budget][:keep]

        return change

    def drop_budget(rows, budget):
        def change(runs, rates):
            for row in rows:
                runs.get(row, {}).pop(budget, None)

        return change

    def drop_rows(rows):
        def change(runs, rates):
            for row in rows:
                runs.pop(row)

        return change

    def one_rate(rows):
        def change(runs, rates):
            for row in rows:
                if row in rates:
                    rates[row] = 1

        return change

    word = [r for r in WORD_LEVEL if r in runs]
    word_budgets = sorted({b for r in word for b in runs[r]}, key=_order)
    if word and len(word_budgets) > 1:
        smallest = word_budgets[0]
        steps.append(
            (
                "ELMo and random + biLSTM: 1 seed above the smallest label budget",
                keep_first_seed(word, lambda row, b: b != smallest),
            )
        )
        for budget in reversed(word_budgets[1:]):
            note = f"ELMo and random + biLSTM: label budget {budget_name(budget)} dropped"
            steps.append((note, drop_budget(word, budget)))
    claims = "BERT and ELECTRA rows" if "electra-finetuned" in runs else "BERT rows"
    named = ((CONLL_CLAIMS, "CoNLL-2003 BERT rows"), (CLAIMS, claims))
    single = [r for r in ONE_RUN if r in runs]
    if single:
        note = "BERT frozen + linear head and bag of embeddings dropped"
        steps.append((note, drop_rows(single)))
    for group, name in named:
        group = [r for r in group if r in runs]
        if group and rates[group[0]] > 1:
            steps.append((f"{name}: the first learning rate only", one_rate(group)))
    if word:  # after the BERT rows' rate choice: the ELMo claim is a median of seeds too
        note = "ELMo and random + biLSTM: 1 seed"
        steps.append((note, keep_first_seed(word, lambda row, b: True)))
    claim_budgets = {}
    for group, name in named:  # fewer seeds above the smallest budget before a curve of 1 point
        group = [r for r in group if r in runs]
        budgets = claim_budgets[name] = sorted({b for r in group for b in runs[r]}, key=_order)
        most = max((len(runs[r][b]) for r in group for b in budgets[1:]), default=1)
        for keep in range(most - 1, 0, -1):  # one seed fewer a step
            note = f"{name}: {keep} seed{'s' if keep > 1 else ''} above the smallest label budget"
            above = keep_first_seed(group, lambda row, b, s=budgets[0]: b != s, keep)
            steps.append((note, above))
    for group, name in named:
        group = [r for r in group if r in runs]
        for budget in reversed(claim_budgets[name][1:]):
            note = f"{name}: label budget {budget_name(budget)} dropped"
            steps.append((note, drop_budget(group, budget)))
    for group, name in named:
        group = [r for r in group if r in runs]
        if group:
            steps.append((f"{name}: 1 seed", keep_first_seed(group, lambda row, b: True)))
    return steps


def _order(budget: int | None) -> float:
    return float("inf") if budget is None else budget


def plan_comparison(
    seconds: float,
    rows: list[str],
    data: dict[str, Data],
    budgets: list[int | None],
    seeds: list[int],
    rates: int,
    epochs: int,
    tokens_per_second: float,
    conll_budgets: list[int | None] = (),
) -> Plan:
    """The full plan if its estimate fits `seconds`, else the full plan less the first drop
    steps that make it fit (or all of them, with a note that even that is over)."""
    runs, rate_counts = full_plan(rows, budgets, seeds, list(conll_budgets), rates)

    def estimate():
        return plan_seconds(runs, rate_counts, data, epochs, tokens_per_second)

    notes = []
    for note, change in drop_steps(runs, rate_counts):
        if estimate() <= seconds:
            break
        change(runs, rate_counts)
        notes.append(note)
    if estimate() > seconds:
        notes.append(
            f"even so, the estimate ({estimate():.0f} s) is over the fine-tuning share "
            f"({seconds:.0f} s): the run takes longer than its budget"
        )
    return Plan(runs, rate_counts, estimate(), notes)
