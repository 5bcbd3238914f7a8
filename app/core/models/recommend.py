"""The recommender: the biggest model that fits, at a sane quantization, and why.

For a fixed memory budget a larger model at ~4 bits beats a smaller one at
8 or 16 bits (Dettmers & Zettlemoyer 2022; ../shared/REFERENCE.md section 5),
until quantization drops below ~3 bits. Every catalog model is planned at
every allowed quant with the fit engine (`plan_memory`, judged at an 8k
context unless told otherwise), scored, timed, and ranked.

Quality (one formula, in "points"; 10 points = twice the parameters):

    quality = 40 + 10 * log2(P) - 100 * KL(quant) * sqrt(8 / P)

P is billions of parameters (for a mixture of experts, sqrt(total * active),
the usual dense equivalent: Qwen3-30B-A3B counts as ~10B). KL is the measured
KL divergence of the quant from F16 on Llama-3-8B (`quants.QUALITY`); the
sqrt(8 / P) factor scales it because bigger models lose less to the same
quant (Llama-2-70B loses about a third of what an 8B does at Q3_K_M-Q4_K_M).
With these constants a 32B at Q4_K_M scores 88.4 and a 14B at Q8_0 78.0; a
13B at Q3_K_M (69.0) beats a 7B at Q6_K (67.5), as measured on LLaMA.

The floor, from the big-but-quantized rule: below 65B parameters, nothing
under ~4 bits (IQ4_XS, 4.25 bits a weight, is the lowest) while some model of
a useful size (USEFUL_MIN_B, 3B dense-equivalent) runs at >= 4 bits at a
usable speed; only when none does are Q3_K_M / IQ3_M allowed (never worse:
7-8B models break below ~3 bits). 70B-class models (>= 65B) may go down to
Q2_K, where the rule's gain from size still outweighs the quant's loss.

Ranking score (no hand-set quality: everything is read from the catalog entry,
so a model the Hub refresh found is ranked by the same formula) = quality
    + 5 when the model's strengths match the use case (10 for a coder at code)
    + 9 per year of release after 2024: almost a doubling of parameters a year, since
      labs' new generations routinely match their previous one at about twice the size
      (at 2 a year, Llama 3.3 70B of December 2024 outranked Qwen3.6-27B of April 2026
      on two 24 GB cards, and Qwen3-14B outranked Qwen3.5-9B)
    - 3 when the catalog marks it superseded by a newer model of its size (Qwen3-8B by
      Qwen3.5-9B): at the same size and cost the newer generation wins
    - 3 when its layers do not all fit on the GPU (so a full fit wins a near tie)
    - 5 per halving of speed below the comfortable speed (4x the use case's minimum:
      20 tokens/s for chat), so a big model crawling from RAM loses to one that flies.
Picks slower than the use case's minimum speed are demoted below all others
and marked slow, never dropped. The first three picks follow the fallback
ladder: the best pick, then a model of about half its parameters at 8-bit,
then a small model at 8-bit that is faster, for speed.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from app.core.errors import UsageError
from app.core.fit import (
    Bandwidth,
    LoadChoices,
    SpeedEstimate,
    apple_bandwidth,
    cpu_bandwidth,
    estimate_speed,
    gpu_bandwidth,
    plan_with_choices,
    quants,
    token_cost,
)
from app.core.machine import GiB, HardwareProfile
from app.core.models.catalog import CATALOG_QUANTS, Catalog, CatalogFile, CatalogModel, load_catalog

if TYPE_CHECKING:
    from app.core.fit import MemoryPlan

#: Context a recommendation is judged at unless the user asks for another.
DEFAULT_CTX = 8192
#: Points per year a model's release is newer than RECENCY_EPOCH: a newer generation is worth
#: almost a doubling of parameters (10 points) a year (see the module docstring).
RECENCY_PER_YEAR = 9.0
RECENCY_EPOCH = date(2024, 1, 1)
#: Points taken from a pick whose layers do not all fit on the GPU.
PARTIAL_PENALTY = 4.0
#: A pick is comfortable at COMFORT_FACTOR x the use case's minimum speed (20 tokens/s
#: for chat, faster than people read); below it, SPEED_WEIGHT points per halving.
COMFORT_FACTOR = 4.0
SPEED_WEIGHT = 5.0
#: From this many billions of parameters (70B class), quants down to Q2_K are allowed.
LOW_BIT_MIN_PARAMS_B = 65.0
#: Below ~4 bits only when no model of at least this many (dense-equivalent) billions runs at >= 4 bits.
USEFUL_MIN_B = 3.0
#: Points taken from a model the catalog marks superseded by a newer one of its size.
SUPERSEDED_PENALTY = 3.0
#: Ladder rung 2: "about half the parameters" means this range of the best pick's size.
HALF_RANGE = (0.3, 0.7)
#: Ladder rung 3: a "small" model has at most this many billions (and a third of the best's).
SMALL_MAX_B = 4.5
#: Share of the context the KV read per token assumes (a conversation half-way through).
KV_FILL = 0.5


@dataclass(frozen=True)
class UseCase:
    """One row of the decision table (REFERENCE section 5)."""

    name: str
    label: str
    #: What the row prescribes, in words.
    rule: str
    #: Tokens/s under which a pick is demoted and marked slow.
    min_speed: float
    #: The catalog strength that earns a bonus, and how many points it is worth.
    strength: str | None = None
    strength_bonus: float = 5.0
    #: The lowest quant this use allows (None: the global floor only).
    min_quant: str | None = None
    #: Small models only (billions of active parameters).
    max_params_b: float | None = None
    #: The model must have been trained on inputs at least this long.
    min_trained_ctx: int | None = None


USE_CASES: dict[str, UseCase] = {u.name: u for u in (
    UseCase("chat", "chat", "the largest model at ~4-bit that fits", 5.0, "chat"),
    UseCase("rag", "document Q&A (RAG)", "the largest model at ~4-bit that fits, trained on long inputs",
            5.0, None, min_trained_ctx=32768),
    # A reasoning model thinks in many tokens before it answers: it needs speed.
    # Math and multi-step reasoning break first under quantization: stay at ~4-bit or above.
    UseCase("reasoning", "reasoning", "the largest model at ~4-bit that fits", 8.0, "reasoning",
            min_quant="Q4_K_S"),
    # A coder-tuned model matches a general one about twice its size at code: 10 points.
    UseCase("code", "code", "a medium model at 8-bit, at least Q6_K", 8.0, "code", 10.0,
            min_quant="Q6_K"),
    UseCase("json", "strict JSON and classification", "a small model at high precision, fast", 15.0,
            "tools", min_quant="Q8_0", max_params_b=9.5),
)}


# -- quality ------------------------------------------------------------------------


def effective_params_b(params_b: float, active_params_b: float | None = None) -> float:
    """Billions of parameters a model is "worth": sqrt(total * active) for a mixture of experts."""
    if active_params_b and active_params_b < params_b:
        return math.sqrt(params_b * active_params_b)
    return params_b


def kl_divergence(quant: str) -> float:
    """The measured KL divergence of `quant` from F16 (Llama-3-8B)."""
    measured = quants.quality(quant)
    if measured is None:
        raise ValueError(f"no quality measurement for {quant}")
    return measured.kl_divergence


def quality(params_b: float, quant: str, *, active_params_b: float | None = None) -> float:
    """The module docstring's formula: 10 points per doubling of parameters, minus the quant's loss."""
    p = effective_params_b(params_b, active_params_b)
    return 40.0 + 10.0 * math.log2(p) - 100.0 * kl_divergence(quant) * math.sqrt(8.0 / p)


def quant_allowed(params_b: float, quant: str, use_case: UseCase | None = None, *,
                  low_bits: bool = False) -> bool:
    """The floor: >= 4 bits under 65B (>= Q3_K_M / IQ3_M with `low_bits`, the fallback when nothing
    useful fits at 4 bits), >= Q2_K from 65B; and the use case's own floor."""
    kl = kl_divergence(quant)
    if params_b >= LOW_BIT_MIN_PARAMS_B:
        floor = "Q2_K"
    elif low_bits:
        floor = "IQ3_M"
    else:
        if _base_bits(quant) < 4.0:
            return False
        floor = quant
    if kl > kl_divergence(floor) + 1e-9:
        return False
    return not (use_case and use_case.min_quant and kl > kl_divergence(use_case.min_quant) + 1e-9)


def bits_label(quant: str) -> str:
    """'4-bit' for Q4_K_M, as people say it."""
    q = quant.upper()
    if q in ("F16", "BF16"):
        return "16-bit"
    for prefix in ("IQ", "Q"):
        if q.startswith(prefix) and q[len(prefix):len(prefix) + 1].isdigit():
            return f"{q[len(prefix)]}-bit"
    return q


def released_words(iso: str) -> str:
    """'April 2026' for '2026-04-22' (the month is what people remember a release by)."""
    try:
        day = date.fromisoformat(iso[:10])
    except ValueError:
        return iso
    return day.strftime("%B %Y")


def catalog_freshness() -> str:
    """'Catalog snapshot of April 2026; last checked for new models on 2 December 2026.' (or never)."""
    from app.core.models.catalog import last_refreshed, snapshot_date

    refreshed = last_refreshed()
    when = f"last checked for new models on {_day_words(refreshed)}" if refreshed else \
        "never checked for newer models (camelid catalog --refresh)"
    return f"Catalog snapshot of {released_words(snapshot_date())}; {when}."


def _day_words(iso: str) -> str:
    try:
        day = date.fromisoformat(iso[:10])
    except ValueError:
        return iso
    return f"{day.day} {day.strftime('%B %Y')}"


def size_label(params_b: float) -> str:
    """'32B', '3.8B', '135M'."""
    if params_b >= 9.5:
        return f"{params_b:.0f}B"
    if params_b >= 1:
        return f"{params_b:.1f}".rstrip("0").rstrip(".") + "B"
    return f"{params_b * 1000:.0f}M"


# -- picks --------------------------------------------------------------------------


@dataclass
class Pick:
    """One recommended download: a catalog model at one quant, its plan, speed and reasons."""

    rank: int
    model: CatalogModel
    file: CatalogFile
    plan: MemoryPlan
    quality: float
    score: float
    speed: SpeedEstimate
    slow: bool
    #: best | half-size | fast | alternative
    role: str
    use_case: str
    n_ctx: int
    why: str = ""

    @property
    def quant(self) -> str:
        return self.file.quant

    @property
    def verdict(self) -> str:
        return str(getattr(self.plan.verdict, "value", self.plan.verdict))

    @property
    def n_gpu_layers(self) -> int:
        return int(self.plan.n_gpu_layers)

    @property
    def tokens_per_s(self) -> float:
        return self.speed.tokens_per_s

    @property
    def effective_params_b(self) -> float:
        return effective_params_b(self.model.params_b, self.model.active_params_b)

    def to_dict(self) -> dict[str, Any]:
        """The `camelid recommend --json` pick."""
        return {
            "rank": self.rank, "model": self.model.model, "repo": self.model.repo,
            "quant": self.quant, "params_b": self.model.params_b, "file_bytes": self.file.size_bytes,
            "verdict": self.verdict, "n_gpu_layers": self.n_gpu_layers, "n_ctx": self.n_ctx,
            "est_tokens_per_s": round(self.tokens_per_s, 1), "quality": round(self.quality, 1),
            "why": self.why,
            "name": self.model.name, "file": self.file.filename, "size_predicted": self.file.predicted,
            "slow": self.slow, "role": self.role, "released": self.model.released,
            "source": self.model.source,
        }


#: Plans and speeds already made: (machine, n_ctx, shape, quant) -> (plan, speed) or None.
_FITS: OrderedDict[tuple[Any, ...], tuple[Any, SpeedEstimate] | None] = OrderedDict()
FIT_CACHE_SIZE = 4096


@dataclass
class _Machine:
    """What ranking needs to know about the hardware, computed once per call."""

    hardware: HardwareProfile
    #: Everything about the hardware that a plan or a speed depends on.
    key: tuple[Any, ...]
    gpus: list[tuple[Bandwidth, float]]
    cpu: Bandwidth
    gpu_words: str
    capacity: int  # bytes that could hold weights at all (GPU + RAM budgets, once)
    gpu_budget: int
    unified: bool
    has_gpu: bool
    chip: str = ""
    budget_words: str = ""
    ram_words: str = ""


@dataclass
class _Ranker:
    machine: _Machine
    use_case: UseCase
    n_ctx: int
    min_speed: float
    #: The load settings the engine will use, so a pick's plan is the load the user gets.
    choices: LoadChoices
    picks: dict[tuple[str, str], Pick | None] = field(default_factory=dict)

    # -- scoring ------------------------------------------------------------------
    def score(self, model: CatalogModel, q: float, *, full: bool, tokens_per_s: float) -> float:
        """Quality plus the use case's bonus, minus the partial-offload and speed penalties."""
        score = q + recency_bonus(model.released)
        if model.superseded_by:
            score -= SUPERSEDED_PENALTY
        if self.use_case.strength and self.use_case.strength in model.strengths:
            score += self.use_case.strength_bonus
        if not full:
            score -= PARTIAL_PENALTY
        return score - speed_penalty(tokens_per_s, self.min_speed)

    def _full(self, verdict: str) -> bool:
        """No layer left behind: everything on the GPU, or a machine with no GPU to use."""
        return verdict == "full_gpu" or (verdict == "cpu" and not self.machine.has_gpu)

    def bound(self, model: CatalogModel, quant: str) -> tuple[float, bool] | None:
        """(the best score `quant` could reach, whether it is surely slow), without planning.

        None when even the smallest possible file exceeds every budget. The
        bound is optimistic on purpose (a lower bound on the bytes, the GPUs
        holding all they can and nothing for KV or compute), so that skipping a
        plan whose bound loses never skips a winner.
        """
        floor = _size_floor(model, quant)
        if floor > self.machine.capacity:
            return None
        read = _read_floor(model, quant)
        gpu = self.machine.gpu_budget
        on_gpu = min(read, gpu * read / max(floor, 1)) if self.machine.gpus else 0
        seconds = (read - on_gpu) / self.machine.cpu.effective_bytes_per_s
        if on_gpu:
            seconds += on_gpu / max(b.effective_bytes_per_s for b, _ in self.machine.gpus)
        speed = 1.0 / seconds if seconds > 0 else float("inf")
        full = not (self.machine.has_gpu and floor > gpu)
        q = quality(model.params_b, quant, active_params_b=model.active_params_b)
        return self.score(model, q, full=full, tokens_per_s=speed), speed < self.min_speed

    # -- planning -------------------------------------------------------------------
    def evaluate(self, model: CatalogModel, quant: str) -> Pick | None:
        """`model` at `quant` planned and timed; None when it cannot run here."""
        key = (model.id, quant)
        if key not in self.picks:
            self.picks[key] = self._evaluate(model, quant)
        return self.picks[key]

    def _evaluate(self, model: CatalogModel, quant: str) -> Pick | None:
        # By shape, so a base model and its coder share one plan, and across calls on
        # the same machine (the GUI asks again for each use case).
        key = (self.machine.key, self.n_ctx, self.choices, model.arch, model.context, quant)
        if key in _FITS:
            _FITS.move_to_end(key)
        else:
            _FITS[key] = self._fit(model, quant)
            if len(_FITS) > FIT_CACHE_SIZE:
                _FITS.popitem(last=False)
        fit = _FITS[key]
        if fit is None:
            return None
        plan, speed = fit
        q = quality(model.params_b, quant, active_params_b=model.active_params_b)
        score = self.score(model, q, full=self._full(plan.verdict), tokens_per_s=speed.tokens_per_s)
        return Pick(rank=0, model=model, file=model.file(quant), plan=plan, quality=q, score=score,
                    speed=speed, slow=speed.tokens_per_s < self.min_speed, role="alternative",
                    use_case=self.use_case.name, n_ctx=self.n_ctx)

    def _fit(self, model: CatalogModel, quant: str) -> tuple[Any, SpeedEstimate] | None:
        meta = model.meta(quant)
        if (meta.file_size or 0) > self.machine.capacity:
            return None
        plans = [self._plan(meta)]
        if meta.n_expert > 1 and self.machine.has_gpu and plans[0].verdict != "full_gpu":
            # A mixture of experts may instead keep every layer on the GPU and its experts in RAM
            # (plan_memory chooses how many blocks' experts): whichever placement is faster wins.
            plans.append(plan_with_choices(meta, self.machine.hardware, replace(
                self.choices, n_ctx=self.n_ctx, gpu_layers=None, cpu_moe=None), improvements=False))
        best: tuple[Any, SpeedEstimate] | None = None
        cost = token_cost(meta)
        for plan in plans:
            if plan.verdict == "no_fit":
                continue
            kv = int(plan.kv_cache_bytes * KV_FILL)
            speed = estimate_speed(cost, n_gpu_layers=int(plan.n_gpu_layers), gpus=self.machine.gpus,
                                   cpu=self.machine.cpu, kv_read_bytes=kv, cpu_expert_layers=plan.cpu_moe)
            if best is None or speed.tokens_per_s > best[1].tokens_per_s:
                best = plan, speed
        return best

    def _plan(self, meta: Any) -> Any:
        """`plan_memory` with the most GPU layers that fit, found in a few steps.

        plan_memory finds that count by trying every count from the top, which
        costs a tensor-table walk each; here the overflow of a full offload
        gives a close first guess, then single steps confirm it. The plan
        returned is plan_memory's own for that count, so verdict and bytes are
        exactly what `camelid plan` and the engine will see.
        """
        def at(k: int) -> Any:
            # Planned as the engine will load it: the user's load settings at this context and layer count.
            return plan_with_choices(meta, self.machine.hardware,
                                     replace(self.choices, n_ctx=self.n_ctx, gpu_layers=k), improvements=False)

        if not self.machine.has_gpu:
            return at(0)
        n_off = meta.n_layer + 1
        full = at(n_off)
        if _gpus_fit(full):
            return full
        over = sum(max(0, d.total - d.budget) for d in full.devices if d.kind != "ram")
        per_layer = max(1, sum(d.weights + d.kv_cache for d in full.devices if d.kind != "ram") // n_off)
        k = max(0, n_off - 1 - -(-over // per_layer))
        plan = at(k)
        if _gpus_fit(plan):
            while k + 1 < n_off:
                nxt = at(k + 1)
                if not _gpus_fit(nxt):
                    break
                k, plan = k + 1, nxt
            return plan
        while k > 0:
            k -= 1
            plan = at(k)
            if _gpus_fit(plan):
                return plan
        return plan

    # -- choosing -------------------------------------------------------------------
    def best_of(self, candidates: list[tuple[CatalogModel, str]]) -> Pick | None:
        """The best pick among (model, quant) candidates, planning as few as it can.

        Candidates are tried in order of their optimistic bound; once the best
        usable pick found scores at least the next bound, no later candidate
        can win. Surely-slow candidates are planned only when nothing usable
        turned up, so a model slow at every quant is still listed, marked slow.
        """
        bounded = [(b, m, q) for m, q in candidates if (b := self.bound(m, q)) is not None]
        bounded.sort(key=lambda x: -x[0][0])
        best: Pick | None = None
        for surely_slow_pass in (False, True):
            if best is not None and not best.slow:
                break
            for (ub, surely_slow), model, quant in bounded:
                if surely_slow != surely_slow_pass:
                    continue
                if best is not None and (not best.slow or surely_slow_pass) and ub <= best.score:
                    break
                pick = self.evaluate(model, quant)
                if pick is not None and (best is None or _order(pick) < _order(best)):
                    best = pick
        return best


def recency_bonus(released: str) -> float:
    """RECENCY_PER_YEAR points per year after RECENCY_EPOCH (ISO date)."""
    days = (date.fromisoformat(released) - RECENCY_EPOCH).days
    return RECENCY_PER_YEAR * days / 365.25


def speed_penalty(tokens_per_s: float, min_speed: float) -> float:
    """SPEED_WEIGHT points per halving of speed below the comfortable speed (COMFORT x minimum)."""
    comfort = COMFORT_FACTOR * min_speed
    if comfort <= 0 or tokens_per_s >= comfort:
        return 0.0
    return SPEED_WEIGHT * math.log2(comfort / max(tokens_per_s, 1e-3))


def _gpus_fit(plan: Any) -> bool:
    """Whether every GPU's share of a plan is within its budget."""
    return all(d.total <= d.budget for d in plan.devices if d.kind != "ram")


def _size_floor(model: CatalogModel, quant: str) -> int:
    """A lower bound on the file's bytes without predicting it: every weight at the base type.

    llama.cpp's mixes only ever raise a tensor above the file type's base type
    (and its fallbacks for odd row lengths are wider too); 3% covers norms and
    rounding the other way.
    """
    if quant in model.hub_files:
        return model.hub_files[quant].size_bytes
    return int(0.97 * model.arch.parameter_count() * _base_bits(quant) / 8)


def _read_floor(model: CatalogModel, quant: str) -> int:
    """A lower bound on the bytes one token reads: the active weights less an untied embedding."""
    arch = model.arch
    params = arch.active_parameter_count()
    if not arch.tied_embeddings:
        params -= arch.n_vocab * arch.n_embd  # a lookup reads one row of token_embd
    return int(0.97 * params * _base_bits(quant) / 8)


def _base_bits(quant: str) -> float:
    ftype = quants.parse_file_type(quant)
    if ftype is None:
        raise UsageError(f"{quant} is not a quantization llama.cpp writes files in.")
    return quants.bits_per_weight(quants.FILE_TYPE_BASE[ftype])


def _order(pick: Pick) -> tuple[bool, float, str]:
    """Sort key: fast before slow, then score, then the newer model."""
    return (pick.slow, -pick.score, _negated_date(pick.model.released))


def _negated_date(iso: str) -> str:
    # Newer first inside ascending sorts: map each digit d to 9 - d.
    return "".join(str(9 - int(c)) if c.isdigit() else c for c in iso)


def recommend(
    hardware: HardwareProfile,
    use_case: str = "chat",
    *,
    n_ctx: int | None = None,
    min_speed: float | None = None,
    catalog: Catalog | None = None,
    choices: LoadChoices | None = None,
    limit: int | None = None,
) -> list[Pick]:
    """Every catalog model that can run on `hardware`, best first, each at its best quant.

    `limit` N: only the best N (plus the ladder) are needed. Models are then planned in order of
    their optimistic bound, and once N usable picks are in hand, a model whose bound cannot beat
    the N-th is not planned at all (branch and bound: the result's first N are the same).

    Plans use `choices` (flash attention, KV cache type; default: Camelid's
    defaults), the load settings the engine will apply; `n_ctx` is the context.

    The first picks follow the fallback ladder (best, about half the size at
    8-bit, small and fast); slow picks come last, marked. No pick has a
    `no_fit` plan; an empty list means nothing in the catalog fits at all.
    """
    case = USE_CASES.get(use_case)
    if case is None:
        raise UsageError(f"There is no use case called {use_case!r}.",
                         f"Use one of: {', '.join(USE_CASES)}.")
    if n_ctx is not None and n_ctx < 256:
        raise UsageError(f"A {n_ctx}-token context is too small to chat in.",
                         "Give --ctx 2048 or more (8192 is the default).")
    if min_speed is not None and not min_speed >= 0:
        raise UsageError(f"A minimum speed of {min_speed:g} tokens/s is not a speed.",
                         "Give 0 or more tokens/s (0 keeps every model that fits).")
    ctx = n_ctx or DEFAULT_CTX
    ranker = _Ranker(machine=_machine(hardware), use_case=case, n_ctx=ctx,
                     min_speed=case.min_speed if min_speed is None else min_speed,
                     choices=choices or LoadChoices())
    models = [m for m in (load_catalog() if catalog is None else catalog) if _eligible(m, case, ctx)]
    order = sorted(CATALOG_QUANTS, key=kl_divergence)  # best quality first
    best: dict[str, Pick] = {}
    candidates = {m.id: [(m, q) for q in order if quant_allowed(m.params_b, q, case)] for m in models}
    if limit:
        bounds = {m.id: max((b[0] for _, q in candidates[m.id] if (b := ranker.bound(m, q)) is not None),
                            default=-math.inf) for m in models}
        models_in_order = sorted(models, key=lambda m: -bounds[m.id])
    else:
        bounds, models_in_order = {}, models
    for model in models_in_order:
        if limit:
            usable = sorted((p.score for p in best.values() if not p.slow), reverse=True)
            if len(usable) >= limit and bounds[model.id] <= usable[limit - 1]:
                break  # neither this model nor any later one can reach the first `limit`
        pick = ranker.best_of(candidates[model.id])
        if pick is not None:
            best[model.id] = pick
    if not any(not p.slow and p.effective_params_b >= USEFUL_MIN_B for p in best.values()):
        # Nothing useful runs at >= 4 bits: the rule's fallback, 3-bit quants of the models under 65B.
        for model in models:
            low = [q for q in order if quant_allowed(model.params_b, q, case, low_bits=True)]
            pick = ranker.best_of([(model, q) for q in low])
            if pick is not None and (model.id not in best or _order(pick) < _order(best[model.id])):
                best[model.id] = pick
    if not best:
        return []
    ranked = sorted(best.values(), key=_order)
    ladder = _ladder(ranked[0], models, ranker)
    used = {p.model.id for p in ladder}
    picks = ladder + [p for p in ranked if p.model.id not in used]
    # Demote slow picks below every usable one, keeping the ladder's order otherwise.
    picks.sort(key=lambda p: p.slow)
    for i, pick in enumerate(picks, 1):
        pick.rank = i
    full_gpu = [p for p in ranked if p.verdict == "full_gpu"]
    for pick in picks:
        pick.why = _why(pick, picks, full_gpu, ranker)
    return picks


def _eligible(model: CatalogModel, case: UseCase, n_ctx: int) -> bool:
    if model.context < n_ctx:
        return False  # never trained on a window this long
    if case.min_trained_ctx and model.context < case.min_trained_ctx:
        return False
    p = effective_params_b(model.params_b, model.active_params_b)
    return not (case.max_params_b and p > case.max_params_b)


def _ladder(best: Pick, models: list[CatalogModel], ranker: _Ranker) -> list[Pick]:
    """Best pick, then about half its parameters at 8-bit, then a small, faster model at 8-bit."""
    best.role = "best"
    ladder = [best]
    top = best.effective_params_b
    lo, hi = HALF_RANGE
    half = _best_at(ranker, [m for m in models if m.id != best.model.id
                             and lo * top <= _eff(m) <= hi * top], "Q8_0")
    if half is not None and best.quant != "Q8_0":
        half.role = "half-size"
        ladder.append(half)
    used = {p.model.id for p in ladder}
    small = _best_at(ranker, [m for m in models if m.id not in used
                              and _eff(m) <= min(SMALL_MAX_B, top / 3)], "Q8_0",
                     faster_than=best.tokens_per_s)
    if small is not None:
        small.role = "fast"
        ladder.append(small)
    return ladder


def _eff(model: CatalogModel) -> float:
    return effective_params_b(model.params_b, model.active_params_b)


def _best_at(ranker: _Ranker, models: list[CatalogModel], quant: str, *,
             faster_than: float = 0.0) -> Pick | None:
    """The best of `models` at `quant`; with `faster_than`, only picks faster than that."""
    if not faster_than:
        return ranker.best_of([(m, quant) for m in models])
    # In order of the optimistic bound: once a fast-enough pick scores at least the next bound,
    # no later model can beat it.
    bounded = sorted(((b[0], m) for m in models if (b := ranker.bound(m, quant)) is not None),
                     key=lambda x: -x[0])
    best: Pick | None = None
    for ub, m in bounded:
        if best is not None and not best.slow and ub <= best.score:
            break
        p = ranker.evaluate(m, quant)
        if p is not None and p.tokens_per_s > faster_than and (best is None or _order(p) < _order(best)):
            best = p
    return best


# -- the machine, in words ------------------------------------------------------------


def _machine(hardware: HardwareProfile) -> _Machine:
    budgets = hardware.budgets()
    cpu = cpu_bandwidth(hardware)
    key = (repr(budgets), tuple(hardware.backend.gpu_backends),
           tuple((g.index, g.vendor, g.name) for g in hardware.gpus),
           hardware.cpu.name, hardware.cpu.cores_physical,
           hardware.apple.chip if hardware.apple else None)
    if budgets.unified:
        chip = hardware.apple.chip if hardware.apple else "Apple Silicon"
        gpus = [(apple_bandwidth(chip), float(g.budget_bytes)) for g in budgets.gpus]
        budget = budgets.gpus[0].budget_bytes if budgets.gpus else 0
        return _Machine(hardware=hardware, key=key, gpus=gpus, cpu=cpu, gpu_words=f"{chip}'s GPU",
                        capacity=budgets.ram_bytes, gpu_budget=budget, unified=True, has_gpu=bool(gpus), chip=chip,
                        budget_words=_gb(budget), ram_words=_gb_sold(hardware.ram.total_bytes))
    gpus = [(gpu_bandwidth(g.name, g.total_bytes), float(g.budget_bytes)) for g in budgets.gpus]
    sizes = [_gb_sold(g.total_bytes) for g in budgets.gpus]
    if not sizes:
        words = "GPU"
    elif len(sizes) == 1:
        words = f"{sizes[0]} GPU"
    elif len(set(sizes)) == 1:
        words = f"{_count_word(len(sizes))} {sizes[0]} GPUs"
    else:
        words = " + ".join(sizes) + " GPUs"
    return _Machine(hardware=hardware, key=key, gpus=gpus, cpu=cpu, gpu_words=words,
                    capacity=budgets.gpu_bytes + budgets.ram_bytes,
                    gpu_budget=budgets.gpu_bytes, unified=False,
                    has_gpu=bool(gpus), ram_words=_gb_sold(hardware.ram.total_bytes))


def _count_word(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


def _gb_sold(n: int) -> str:
    """Memory as sold: a 24 GiB card is a '24 GB' card."""
    return f"{n / GiB:.0f} GB"


def _gb(n: int) -> str:
    return f"{n / GiB:.1f} GB"


def _file_size(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _article(word: str) -> str:
    """'an' before a size said with a vowel sound: an 8B, an 11B, an 18B, an 80M."""
    eleven = word[:2] in ("11", "18") and not word[2:3].isdigit()
    return "an" if word.startswith("8") or eleven else "a"


def context_words(n_ctx: int) -> str:
    if n_ctx % 1024 == 0:
        k = n_ctx // 1024
        return f"{_article(str(k))} {k}k context"
    return f"a {n_ctx}-token context"


def _where(pick: Pick, machine: _Machine) -> str:
    verdict = pick.verdict
    if machine.unified:
        if verdict == "full_gpu":
            return (f"fits in the {machine.budget_words} of your {machine.ram_words} of unified memory "
                    f"that the {machine.chip} GPU may use")
        if verdict == "partial":
            return (f"puts {pick.n_gpu_layers} of its {pick.model.arch.n_layer + 1} layers on the "
                    f"{machine.chip} GPU and runs the rest on its CPU cores")
        return f"runs on the {machine.chip}'s CPU cores from your {machine.ram_words} of memory"
    if verdict == "full_gpu":
        return f"fits entirely in your {machine.gpu_words}"
    if verdict == "partial" and pick.plan.cpu_moe:
        return (f"runs every layer on your {machine.gpu_words} but keeps the experts of "
                f"{pick.plan.cpu_moe} of its {pick.model.arch.n_layer} blocks in RAM")
    if verdict == "partial":
        return (f"puts {pick.n_gpu_layers} of its {pick.model.arch.n_layer + 1} layers on your "
                f"{machine.gpu_words} and runs the rest from RAM")
    if machine.has_gpu:
        return f"is too big for your {machine.gpu_words} and runs on the CPU from RAM"
    return f"runs on the CPU from your {machine.ram_words} of RAM"


#: Models that think (a reasoning trace) before they answer, by the original model's Hub id: Qwen3's
#: hybrid models (not the -Instruct-2507, -Next-Instruct or -Coder ones), Qwen3.5 and later, GLM-4.5+,
#: gpt-oss, Nemotron 3, SmolLM3, and anything named for thinking or reasoning.
_THINKS = re.compile(r"/(?:Qwen3-(?!.*(?:Instruct|Coder))|Qwen3\.\d|GLM-4\.[5-9]|gpt-oss|NVIDIA-Nemotron-3|"
                     r"SmolLM3|QwQ|DeepSeek-R1)|Thinking|Reasoning", re.IGNORECASE)


def thinks(model: CatalogModel) -> bool:
    """Whether `model` thinks before it answers (a reasoning model), as far as the catalog knows."""
    return bool(_THINKS.search(model.model))


def _thinking_words(pick: Pick, picks: list[Pick]) -> str:
    if thinks(pick.model):
        return "It thinks before it answers (a reasoning model), so it spends many tokens on each reply."
    thinker = next((p for p in picks if thinks(p.model) and not p.slow), None)
    also = (f" {thinker.model.name} ({thinker.quant}) is the best model here that does."
            if thinker is not None else " No model that does runs at a usable speed here.")
    return f"It answers without thinking first (not a reasoning model).{also}"


def _strongest(pick: Pick, picks: list[Pick], ranker: _Ranker) -> str:
    """The true form of "the strongest model that fits" for `pick`, given what else was planned."""
    bigger = [p for p in picks if p is not pick and p.effective_params_b > pick.effective_params_b]
    if not bigger:
        return f"this is the strongest model that fits at {pick.quant}."
    fast = [p for p in bigger if not p.slow]
    if not fast:
        slow = max(bigger, key=lambda p: p.effective_params_b)
        return (f"this is the strongest that fits at {pick.quant} and runs at {ranker.min_speed:g} tokens/s "
                f"or more; {slow.model.name} ({slow.quant}) also fits, but at about {slow.tokens_per_s:.1f} "
                "tokens/s.")
    return f"this is the best balance of quality and speed that fits at {pick.quant}."


def _why(pick: Pick, picks: list[Pick], full_gpu: list[Pick], ranker: _Ranker) -> str:
    """The plain-words reason for one pick."""
    case = ranker.use_case
    m = pick.model
    name = m.name
    first = (f"{name} at {pick.quant} ({_file_size(pick.file.size_bytes)}) "
             f"{_where(pick, ranker.machine)} with {context_words(pick.n_ctx)}, "
             f"at about {pick.tokens_per_s:.0f} tokens/s.")
    parts = [first]
    half = next((p for p in picks if p.role == "half-size"), None)
    if pick.role == "best":
        if case.name == "code":
            parts.append(f"Code needs {case.min_quant} or better (quantization breaks code first); "
                         + _strongest(pick, picks, ranker))
        elif case.name == "json":
            parts.append("Strict JSON and classification want a small model at high precision "
                         "that answers fast.")
        elif half is not None:
            parts.append(f"For {case.label}, {_article(m.size_label)} {m.size_label} model at "
                         f"{bits_label(pick.quant)} "
                         f"beats {_article(half.model.size_label)} {half.model.size_label} at "
                         f"{bits_label(half.quant)}.")
        else:
            parts.append(f"For {case.label}: {case.rule}.")
        older = next((p for p in picks if p.effective_params_b > pick.effective_params_b * 1.2
                      and p.model.released < pick.model.released and not p.slow), None)
        if older is not None:
            parts.append(f"It came out in {released_words(m.released)}; a newer generation matches an "
                         f"older model about twice its size, so it beats the bigger {older.model.name} "
                         f"({released_words(older.model.released)}) that also runs here.")
    elif pick.role == "half-size":
        parts.append("The fallback if the bigger model misbehaves: about half the parameters "
                     "at 8-bit.")
    elif pick.role == "fast":
        parts.append("The fast choice: a small model at 8-bit.")
    elif pick.role == "alternative" and picks and picks[0] is not pick:
        top = picks[0]
        smaller = pick.effective_params_b < top.effective_params_b
        slower = pick.tokens_per_s < top.tokens_per_s
        if smaller and slower:
            parts.append(f"Smaller than {top.model.name} and, on this machine, slower too (a dense model "
                         "reads all its weights for every token); another family to try, not a faster one.")
        elif not smaller and slower:
            parts.append(f"Bigger than {top.model.name} but slower here.")
    if case.name == "reasoning" and pick.role in ("best", "alternative"):
        parts.append(_thinking_words(pick, picks))
    if m.is_moe:
        parts.append(f"A mixture of experts: each token reads only {size_label(m.active_b)} of its "
                     f"{size_label(m.params_b)} parameters, so it runs like a small model.")
    if case.strength and case.strength in m.strengths and pick.role in ("best", "alternative") \
            and (case.name == "code" or (case.name == "reasoning" and thinks(m))):
        parts.append(f"Tuned for {case.strength}.")
    if case.min_trained_ctx and pick.role == "best":
        parts.append(f"Trained on {m.context // 1024}k-token inputs, enough for long documents.")
    if pick.verdict == "partial" or (pick.verdict == "cpu" and ranker.machine.has_gpu):
        alt = next((p for p in full_gpu if p.model.id != m.id), None)
        if alt is not None and alt.effective_params_b < pick.effective_params_b:
            parts.append(f"Partial offload is the price of {_article(m.size_label)} {m.size_label} "
                         f"model; the best that fits entirely on the GPU is {alt.model.name} at "
                         f"{alt.quant}.")
    if pick.slow:
        parts.append(f"Slow here: about {pick.tokens_per_s:.1f} tokens/s, under the "
                     f"{ranker.min_speed:g} tokens/s {case.label} needs.")
    return " ".join(parts)
