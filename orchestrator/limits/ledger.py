"""Prices and the cost ledger: what a call may cost before it is made, what it cost after.

Prices are data in the layout of LiteLLM's ``model_prices_and_context_window.json`` (USD
per token), so a user can drop in a newer copy of that file. Money is ``Decimal`` end to
end, parsed straight from the JSON text: a float never touches it.

Usage reaches the ledger already normalised by the provider: ``input_tokens`` excludes
cache reads and writes (Anthropic reports it so; for OpenAI, prompt_tokens minus
cached_tokens, with cached_tokens as cache reads).
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput, PdError
from orchestrator.providers.base import Usage

DEFAULT_PRICES = Path(__file__).parents[1] / "data" / "prices.json"
LONG_CONTEXT = 200_000  # prompts past this many tokens use the *_above_200k_tokens prices
_PRECISION = 60  # digits; far more than any token count times any price needs


class UnknownModel(PdError):
    """A model has no price, so pd will not call it: spend could not be bounded."""

    exit_code = 2

    def __init__(self, model: str, sources: Sequence[str], known: Sequence[str]) -> None:
        self.model = model
        close = difflib.get_close_matches(model, known, n=5, cutoff=0.5) or sorted(known)[:5]
        super().__init__(
            f"unknown model {model!r}: no price for it in {' + '.join(sources)} "
            f"(fix: add it to the price table or pick one of: {', '.join(close)})"
        )


@dataclass(frozen=True)
class ModelPrice:
    """USD per token. A table without cache prices gets the input price for them."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    max_input: int | None = None
    max_output: int | None = None
    long_context: ModelPrice | None = None  # prices once the prompt passes LONG_CONTEXT

    def for_prompt(self, prompt_tokens: int) -> ModelPrice:
        if self.long_context is not None and prompt_tokens > LONG_CONTEXT:
            return self.long_context
        return self


def cost(usage: Usage, price: ModelPrice) -> Decimal:
    """Dollars for one call, from the usage the provider reported."""
    p = price.for_prompt(usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens)
    with localcontext(prec=_PRECISION):
        return (
            usage.input_tokens * p.input
            + usage.output_tokens * p.output
            + usage.cache_write_tokens * p.cache_write
            + usage.cache_read_tokens * p.cache_read
        )


def worst_case(price: ModelPrice, input_tokens: int, max_output: int) -> Decimal:
    """The most a call can cost: every input token at the dearest input-side price."""
    p = price.for_prompt(input_tokens)
    with localcontext(prec=_PRECISION):
        return input_tokens * max(p.input, p.cache_write, p.cache_read) + max_output * p.output


class PriceTable:
    """Model id -> price. ``load(path)`` lays the user's file over the shipped one."""

    def __init__(self, prices: Mapping[str, ModelPrice], sources: Sequence[str] = ()) -> None:
        self._prices = dict(prices)
        self.sources = tuple(sources) or ("<prices given in code>",)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        prices = _read_prices(DEFAULT_PRICES)
        sources = [str(DEFAULT_PRICES)]
        if path is not None:
            prices.update(_read_prices(Path(path)))
            sources.append(str(path))
        return cls(prices, sources)

    def price(self, model: str) -> ModelPrice:
        try:
            return self._prices[model]
        except KeyError:
            raise UnknownModel(model, self.sources, list(self._prices)) from None

    def __contains__(self, model: object) -> bool:
        return model in self._prices

    @property
    def models(self) -> list[str]:
        return sorted(self._prices)


def _read_prices(path: Path) -> dict[str, ModelPrice]:
    fix = "fix the file, or take a fresh copy of LiteLLM's model_prices_and_context_window.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise BadInput(str(path), f"cannot read the price table ({exc.strerror})", fix) from None
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg}, line {exc.lineno})"
        raise BadInput(str(path), problem, fix) from None
    if not isinstance(data, dict):
        raise BadInput(str(path), "the price table must be a JSON object of model ids", fix)
    prices = {}
    for model, entry in data.items():
        if model != "sample_spec" and isinstance(entry, dict):
            price = _parse_entry(str(path), model, entry)
            if price is not None:  # entries priced per image or second are not ours
                prices[model] = price
    return prices


def _parse_entry(where: str, model: str, entry: dict[str, Any]) -> ModelPrice | None:
    def usd(name: str, default: Decimal | None = None) -> Decimal | None:
        value = entry.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | Decimal) or value < 0:
            problem = f"{value!r} is not a price in USD per token"
            raise BadInput(where, problem, "write a number >= 0 such as 3e-06", f"{model}.{name}")
        return Decimal(value)

    def count(name: str) -> int | None:
        value = entry.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    inp, out = usd("input_cost_per_token"), usd("output_cost_per_token")
    if inp is None or out is None:
        return None
    read = usd("cache_read_input_token_cost", inp)
    write = usd("cache_creation_input_token_cost", inp)
    long_context = None
    long_in = usd("input_cost_per_token_above_200k_tokens")
    if long_in is not None:
        long_context = ModelPrice(
            long_in,
            usd("output_cost_per_token_above_200k_tokens", out),
            usd("cache_read_input_token_cost_above_200k_tokens", long_in),
            usd("cache_creation_input_token_cost_above_200k_tokens", long_in),
        )
    return ModelPrice(
        inp, out, read, write, count("max_input_tokens"), count("max_output_tokens"), long_context
    )


@dataclass(frozen=True)
class Reservation:
    """Money set aside for one call before it is made."""

    id: int
    worker: str
    role: str
    task: str
    model: str
    amount: Decimal


@dataclass
class _Tally:
    calls: int = 0
    lost: int = 0  # calls whose worker died mid-call, charged at their reservation
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)

    def add(self, usage: Usage, amount: Decimal, lost: bool = False) -> None:
        self.calls += 1
        self.lost += lost
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cost += amount

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": _usd(self.cost)}


DIMENSIONS = ("worker", "role", "task", "model")


class CostLedger:
    """Reserve the worst case before a call, settle the real cost after it.

    Spend never exceeds the budget as long as each call costs at most its reservation.
    When one costs more (the provider used more than reserved), the truth is recorded
    anyway and listed in ``overruns`` for the caller to log; it is spent like any other
    money, so what is left shrinks and no later reservation may reach past the budget.
    A call whose worker died mid-call is charged its whole reservation (``lost``): the
    provider may well have billed it, and nobody will ever report its usage.
    """

    def __init__(
        self,
        prices: PriceTable,
        budget: Decimal | None,
        worker_budget: Decimal | None = None,
    ) -> None:
        self.prices = prices
        self.budget = None if budget is None else _money(budget)
        self.worker_budget = None if worker_budget is None else _money(worker_budget)
        self.overruns: list[tuple[Reservation, Decimal]] = []
        self._spent = Decimal(0)
        self._reserved = Decimal(0)
        self._worker_spent: dict[str, Decimal] = defaultdict(Decimal)
        self._worker_reserved: dict[str, Decimal] = defaultdict(Decimal)
        self._open: dict[int, Reservation] = {}
        self._next_id = 1
        self._run = _Tally()
        self._by: dict[str, dict[str, _Tally]] = {d: defaultdict(_Tally) for d in DIMENSIONS}

    def reserve(
        self, worker: str, role: str, task: str, model: str, amount: Decimal
    ) -> Reservation | None:
        """Set ``amount`` aside, or None when it could cross the run's or worker's budget."""
        amount = _money(amount)
        if amount < 0:
            raise ValueError(f"a reservation must be >= 0, not {amount}")
        self.prices.price(model)  # an unknown model fails closed, before any call
        with localcontext(prec=_PRECISION):
            if self.budget is not None and self._spent + self._reserved + amount > self.budget:
                return None
            mine = self._worker_spent[worker] + self._worker_reserved[worker]
            if self.worker_budget is not None and mine + amount > self.worker_budget:
                return None
            reservation = Reservation(self._next_id, worker, role, task, model, amount)
            self._next_id += 1
            self._open[reservation.id] = reservation
            self._reserved += amount
            self._worker_reserved[worker] += amount
        return reservation

    def reserve_call(
        self, worker: str, role: str, task: str, model: str, input_tokens: int, max_output: int
    ) -> Reservation | None:
        """Reserve the worst case of a call: estimated input plus ``max_output`` tokens."""
        amount = worst_case(self.prices.price(model), input_tokens, max_output)
        return self.reserve(worker, role, task, model, amount)

    def settle(self, reservation: Reservation, usage: Usage) -> Decimal:
        """Record the real cost of a made call and free its reservation; returns the cost."""
        self._close(reservation)
        actual = cost(usage, self.prices.price(reservation.model))
        self._record(reservation, usage, actual)
        if actual > reservation.amount:
            self.overruns.append((reservation, actual))
        return actual

    def lost(self, reservation: Reservation) -> Decimal:
        """Charge a call that went out and never came back (its worker died) its whole
        reservation, the most it can have cost; returns that amount."""
        self._close(reservation)
        self._record(reservation, Usage(), reservation.amount, lost=True)
        return reservation.amount

    def charge(
        self, worker: str, role: str, task: str, model: str, amount: Decimal, lost: bool = False
    ) -> None:
        """Spend recorded earlier (``pd resume`` replays a lost call's charge)."""
        reservation = Reservation(0, worker, role, task, model, _money(amount))
        self._record(reservation, Usage(), reservation.amount, lost=lost)

    def release(self, reservation: Reservation) -> None:
        """Free a reservation whose call was not made, or failed without usage."""
        if reservation.id in self._open:
            self._close(reservation)

    @property
    def spent(self) -> Decimal:
        return self._spent

    @property
    def reserved(self) -> Decimal:
        return self._reserved

    @property
    def remaining(self) -> Decimal | None:
        """What may still be reserved under the run budget (None: no budget)."""
        if self.budget is None:
            return None
        with localcontext(prec=_PRECISION):
            return self.budget - self._spent - self._reserved

    def room(self, worker: str) -> Decimal | None:
        """What one more reservation of ``worker`` may be, under both budgets (None: no
        budget); negative once an overrun has spent past one."""
        rooms = [] if self.remaining is None else [self.remaining]
        if self.worker_budget is not None:
            with localcontext(prec=_PRECISION):
                mine = self._worker_spent[worker] + self._worker_reserved[worker]
                rooms.append(self.worker_budget - mine)
        return min(rooms) if rooms else None

    def could_free(self, worker: str, amount: Decimal) -> bool:
        """Whether settling the open reservations could make room for ``amount``: each
        budget it does not fit has reservations open under it (for the worker budget,
        only the worker's own count), and it would fit were they all free."""
        checks = [(self.budget, self._spent, self._reserved)]
        if self.worker_budget is not None:
            mine = (self._worker_spent[worker], self._worker_reserved[worker])
            checks.append((self.worker_budget, *mine))
        with localcontext(prec=_PRECISION):
            for budget, spent, held in checks:
                short = budget is not None and spent + held + amount > budget
                if short and (not held or spent + amount > budget):  # type: ignore[operator]
                    return False
        return True

    def exhausted(self, min_call: Decimal) -> bool:
        """True when not even a call of ``min_call`` fits the run budget any more."""
        remaining = self.remaining
        return remaining is not None and remaining < _money(min_call)

    def totals(self) -> dict[str, Any]:
        """Tokens and dollars per run, worker, role, task and model, ready for JSON."""
        return {
            "budget": None if self.budget is None else _usd(self.budget),
            "worker_budget": None if self.worker_budget is None else _usd(self.worker_budget),
            "spent": _usd(self._spent),
            "reserved": _usd(self._reserved),
            "overruns": len(self.overruns),
            "lost": self._run.lost,
            "run": self._run.to_dict(),
            **{d: {k: t.to_dict() for k, t in sorted(self._by[d].items())} for d in DIMENSIONS},
        }

    def _record(
        self, reservation: Reservation, usage: Usage, amount: Decimal, lost: bool = False
    ) -> None:
        with localcontext(prec=_PRECISION):
            self._spent += amount
            self._worker_spent[reservation.worker] += amount
            self._run.add(usage, amount, lost)
            for dim in DIMENSIONS:
                self._by[dim][getattr(reservation, dim)].add(usage, amount, lost)

    def _close(self, reservation: Reservation) -> None:
        if self._open.pop(reservation.id, None) is None:
            raise ValueError(f"reservation {reservation.id} is not open (settled or released)")
        with localcontext(prec=_PRECISION):
            self._reserved -= reservation.amount
            self._worker_reserved[reservation.worker] -= reservation.amount


def _money(value: Decimal | int) -> Decimal:
    """Decimal or int only: a float would already have lost cents."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"money must be a Decimal (or int), not {type(value).__name__}")
    return Decimal(value)


def _usd(value: Decimal) -> str:
    """Plain dollars for JSON: no exponent, no trailing zeros, no rounding."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
