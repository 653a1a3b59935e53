"""Price table, cost and the budget ledger: exact money, fail closed, never over budget."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.errors import BadInput, PdError
from orchestrator.limits.ledger import (
    DEFAULT_PRICES,
    CostLedger,
    ModelPrice,
    PriceTable,
    Reservation,
    UnknownModel,
    cost,
    worst_case,
)
from orchestrator.providers.base import Usage
from orchestrator.team.tiers import DEFAULT_MODELS, load_tiers, resolve_model

D = Decimal
TABLE = PriceTable.load()

# ---- the shipped price table ------------------------------------------------------------


def test_shipped_prices_are_decimals_read_exactly_from_the_json_text() -> None:
    price = TABLE.price("claude-sonnet-4-5")
    assert price == ModelPrice(
        input=D("0.000003"),
        output=D("0.000015"),
        cache_read=D("3E-7"),
        cache_write=D("0.00000375"),
        max_input=200_000,
        max_output=64_000,
        long_context=price.long_context,
    )
    assert all(type(p) is Decimal for p in (price.input, price.output, price.cache_write))
    assert str(TABLE.price("o4-mini").cache_read) == "2.75E-7"  # not 2.7500000000000004e-07


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-opus-4-5",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-20250514",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-3-5-haiku-20241022",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-5",
        "gpt-5-mini",
        "o3",
        "o4-mini",
    ],
)
def test_current_models_are_priced(model: str) -> None:
    price = TABLE.price(model)
    assert price.input > 0 and price.output > price.input
    assert price.cache_read < price.input <= price.cache_write
    assert price.max_input and price.max_output


def test_every_shipped_entry_is_a_chat_model_with_token_prices() -> None:
    data = json.loads(DEFAULT_PRICES.read_text())
    models = [name for name in data if name != "sample_spec"]
    assert sorted(models) == TABLE.models
    for name in models:
        entry = data[name]
        assert entry["mode"] == "chat" and entry["litellm_provider"] in ("anthropic", "openai")
        if entry["litellm_provider"] == "anthropic":  # writes cost more than input, reads less
            assert entry["cache_creation_input_token_cost"] > entry["input_cost_per_token"]


def test_every_tier_names_a_priced_model() -> None:
    for provider, tiers in load_tiers().items():
        assert set(tiers) == {"haiku", "sonnet", "opus"}, provider
        for model in tiers.values():
            assert model in TABLE
        order = [TABLE.price(tiers[t]).output for t in ("haiku", "sonnet", "opus")]
        assert order == sorted(order), f"{provider} tiers should get dearer"


def test_unknown_model_fails_with_the_table_and_the_closest_names() -> None:
    with pytest.raises(UnknownModel) as caught:
        TABLE.price("claude-sonet-4-5")
    error = caught.value
    assert isinstance(error, PdError) and error.exit_code == 2
    text = str(error)
    assert "'claude-sonet-4-5'" in text and str(DEFAULT_PRICES) in text
    assert "add it to the price table or pick one of: claude-sonnet-4-5" in text
    assert "\n" not in text


def test_a_user_file_in_litellm_layout_overrides_and_extends(tmp_path: Path) -> None:
    user = tmp_path / "prices.json"
    user.write_text(
        """{
        "sample_spec": {"input_cost_per_token": "a description, not a price",
                        "max_tokens": "LEGACY parameter"},
        "gpt-4o": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                   "litellm_provider": "openai", "mode": "chat",
                   "supports_vision": true, "search_context_cost_per_query": {"low": 0.03}},
        "my-local-model": {"input_cost_per_token": 0, "output_cost_per_token": 0,
                           "max_input_tokens": 32768, "litellm_provider": "ollama"},
        "dall-e-3": {"output_cost_per_image": 0.04, "mode": "image_generation"}
        }"""
    )
    table = PriceTable.load(user)
    assert table.price("gpt-4o") == ModelPrice(D("0.000001"), D("0.000002"), D("1e-6"), D("1e-6"))
    assert table.price("my-local-model").max_input == 32768
    assert table.price("claude-haiku-4-5") == TABLE.price("claude-haiku-4-5")
    assert "sample_spec" not in table and "dall-e-3" not in table
    with pytest.raises(UnknownModel, match=re.escape(str(user))):
        table.price("dall-e-3")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"m": {"input_cost_per_token": -1, "output_cost_per_token": 1}}', "m.input_cost"),
        ('{"m": {"input_cost_per_token": "3e-06", "output_cost_per_token": 1}}', "'3e-06'"),
    ],
)
def test_a_broken_user_price_file_is_bad_input(tmp_path: Path, text: str, words: str) -> None:
    user = tmp_path / "prices.json"
    user.write_text(text)
    with pytest.raises(BadInput, match=words) as caught:
        PriceTable.load(user)
    assert str(user) in str(caught.value)


def test_a_missing_user_price_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read the price table"):
        PriceTable.load(tmp_path / "nope.json")


# ---- cost ----------------------------------------------------------------------------


def test_anthropic_cache_writes_and_reads_have_their_own_prices() -> None:
    # Anthropic reports input_tokens without the cached part; Usage keeps that split.
    usage = Usage(
        input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_read_tokens=10_000
    )
    # 1000*3e-6 + 500*15e-6 + 2000*3.75e-6 + 10000*0.3e-6
    assert cost(usage, TABLE.price("claude-sonnet-4-5")) == D("0.021")


def test_openai_cached_prompt_tokens_are_priced_as_cache_reads() -> None:
    # OpenAI: prompt_tokens=10000 of which cached_tokens=8000, completion_tokens=1000.
    # The provider normalises that to 2000 uncached input + 8000 cache reads.
    usage = Usage(input_tokens=2000, output_tokens=1000, cache_read_tokens=8000)
    # 2000*2.5e-6 + 8000*1.25e-6 + 1000*10e-6; all 10000 at the input price would be 0.035
    assert cost(usage, TABLE.price("gpt-4o")) == D("0.025")


def test_missing_cache_prices_default_to_the_input_price(tmp_path: Path) -> None:
    user = tmp_path / "p.json"
    user.write_text('{"m": {"input_cost_per_token": 2e-06, "output_cost_per_token": 4e-06}}')
    price = PriceTable.load(user).price("m")
    assert price.cache_read == price.cache_write == price.input == D("0.000002")
    assert cost(Usage(0, 0, 10, 10), price) == D("0.00004")


def test_prompts_past_200k_tokens_use_the_long_context_prices() -> None:
    price = TABLE.price("claude-sonnet-4-5")
    assert cost(Usage(input_tokens=200_000), price) == D("0.6")
    assert cost(Usage(input_tokens=100_000, cache_read_tokens=100_001), price) == D(
        "0.6600006"
    )  # 100000*6e-6 + 100001*0.6e-6
    assert worst_case(price, 300_000, 0) == 300_000 * D("7.5e-6")


def test_worst_case_takes_every_input_token_at_the_dearest_input_price() -> None:
    # Sonnet: a cache write (3.75e-6) is dearer than plain input (3e-6).
    assert worst_case(TABLE.price("claude-sonnet-4-5"), 1000, 100) == D("0.00525")
    assert worst_case(TABLE.price("gpt-4o"), 1000, 100) == D("0.0035")


# ---- the ledger ------------------------------------------------------------------------


def usage_costing(model: str, dollars: str) -> Usage:
    """A usage of output tokens only, costing exactly ``dollars`` on ``model``."""
    tokens = D(dollars) / TABLE.price(model).output
    assert tokens == tokens.to_integral_value()
    return Usage(output_tokens=int(tokens))


def test_a_call_that_could_cross_the_budget_is_not_reserved() -> None:
    ledger = CostLedger(TABLE, budget=D("1.00"))
    first = ledger.reserve("w1", "coder", "t1", "gpt-4o", D("0.60"))
    assert first is not None
    assert ledger.reserve("w2", "coder", "t2", "gpt-4o", D("0.41")) is None
    assert ledger.remaining == D("0.40")
    assert ledger.settle(first, usage_costing("gpt-4o", "0.20")) == D("0.20")
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (D("0.20"), 0, D("0.80"))
    assert ledger.reserve("w2", "coder", "t2", "gpt-4o", D("0.80")) is not None
    assert ledger.exhausted(D("0.01")) and not CostLedger(TABLE, None).exhausted(D(10**9))


def test_a_worker_budget_limits_that_worker_only() -> None:
    ledger = CostLedger(TABLE, budget=D(10), worker_budget=D("0.50"))
    assert ledger.reserve("w1", "r", "t", "gpt-4o", D("0.50")) is not None
    assert ledger.reserve("w1", "r", "t", "gpt-4o", D("0.01")) is None
    assert ledger.reserve("w2", "r", "t", "gpt-4o", D("0.50")) is not None


def test_reserve_call_reserves_the_worst_case() -> None:
    ledger = CostLedger(TABLE, budget=D("0.00525"))
    reservation = ledger.reserve_call("w1", "r", "t", "claude-sonnet-4-5", 1000, 100)
    assert reservation is not None and reservation.amount == D("0.00525")
    assert ledger.reserve_call("w1", "r", "t", "claude-sonnet-4-5", 1, 0) is None


def test_an_unknown_model_fails_closed_before_any_call() -> None:
    ledger = CostLedger(TABLE, budget=D(10))
    with pytest.raises(UnknownModel):
        ledger.reserve("w1", "r", "t", "gpt-17", D(1))
    with pytest.raises(UnknownModel):
        ledger.reserve_call("w1", "r", "t", "gpt-17", 10, 10)
    assert ledger.reserved == 0


def test_float_money_is_refused() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        CostLedger(TABLE, budget=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        CostLedger(TABLE, None).reserve("w", "r", "t", "gpt-4o", 0.1)  # type: ignore[arg-type]


def test_an_overrun_is_recorded_as_it_happened_and_flagged() -> None:
    ledger = CostLedger(TABLE, budget=D(1))
    reservation = ledger.reserve("w1", "r", "t", "gpt-4o", D("0.10"))
    assert reservation is not None
    assert ledger.settle(reservation, usage_costing("gpt-4o", "0.30")) == D("0.30")
    assert ledger.spent == D("0.30")
    assert ledger.overruns == [(reservation, D("0.30"))]
    assert ledger.totals()["overruns"] == 1


def test_release_frees_the_reservation_once_and_settle_needs_an_open_one() -> None:
    ledger = CostLedger(TABLE, budget=D(1))
    reservation = ledger.reserve("w1", "r", "t", "gpt-4o", D("0.5"))
    assert reservation is not None
    ledger.release(reservation)
    ledger.release(reservation)
    assert ledger.reserved == 0
    with pytest.raises(ValueError, match="not open"):
        ledger.settle(reservation, Usage(output_tokens=1))
    assert ledger.spent == 0


def test_totals_are_json_with_tokens_and_dollars_per_dimension() -> None:
    ledger = CostLedger(TABLE, budget=D(5))
    for worker, role, task, model in [("w1", "coder", "t1", "gpt-5"), ("w2", "review", "t1", "o3")]:
        reservation = ledger.reserve(worker, role, task, model, D(1))
        assert reservation is not None
        ledger.settle(reservation, Usage(1000, 200, 0, 3000))
    totals = json.loads(json.dumps(ledger.totals()))
    # gpt-5: 1000*1.25e-6 + 200*1e-5 + 3000*1.25e-7; o3: 1000*2e-6 + 200*8e-6 + 3000*5e-7
    assert totals["budget"] == "5" and totals["spent"] == "0.008725"
    assert totals["run"] == {
        "calls": 2,
        "lost": 0,
        "input_tokens": 2000,
        "output_tokens": 400,
        "cache_write_tokens": 0,
        "cache_read_tokens": 6000,
        "cost": "0.008725",
    }
    assert totals["task"]["t1"]["cost"] == "0.008725"
    assert totals["model"]["gpt-5"]["cost"] == "0.003625"
    assert totals["model"]["o3"]["cost"] == "0.0051"
    assert set(totals["worker"]) == {"w1", "w2"} and set(totals["role"]) == {"coder", "review"}


def test_a_lost_call_is_charged_its_whole_reservation_and_counted_as_lost() -> None:
    ledger = CostLedger(TABLE, budget=D("0.04"))
    reservation = ledger.reserve("w1", "coder", "t1", "claude-haiku-4-5", D("0.011"))
    assert reservation is not None
    assert ledger.lost(reservation) == D("0.011")
    assert ledger.spent == D("0.011") and ledger.reserved == 0
    totals = ledger.totals()
    assert totals["lost"] == 1 and totals["worker"]["w1"] == {
        **totals["worker"]["w1"], "calls": 1, "lost": 1, "cost": "0.011"}  # fmt: skip
    with pytest.raises(ValueError, match="not open"):
        ledger.lost(reservation)  # charged once only


def test_an_overrun_is_spent_so_no_later_reservation_reaches_past_the_budget() -> None:
    ledger = CostLedger(TABLE, budget=D("0.01"))
    first = ledger.reserve("w1", "coder", "t1", "claude-haiku-4-5", D("0.004"))
    second = ledger.reserve("w2", "coder", "t2", "claude-haiku-4-5", D("0.004"))
    assert first is not None and second is not None
    # haiku: $1 per million input tokens; 7,000 input tokens where 0.004 was reserved
    assert ledger.settle(first, Usage(7000, 0)) == D("0.007")
    assert ledger.remaining == D("-0.001")  # 0.007 spent + 0.004 still held
    assert ledger.reserve("w3", "coder", "t3", "claude-haiku-4-5", D("0.0001")) is None
    assert not ledger.could_free("w3", D("0.004"))  # even once w2 settles for nothing
    assert ledger.could_free("w3", D("0.003"))


def test_room_and_could_free_look_at_the_worker_budget_with_its_own_calls_only() -> None:
    ledger = CostLedger(TABLE, budget=D(1), worker_budget=D("0.01"))
    mine = ledger.reserve("w1", "coder", "t1", "claude-haiku-4-5", D("0.008"))
    other = ledger.reserve("w2", "coder", "t2", "claude-haiku-4-5", D("0.009"))
    assert mine is not None and other is not None
    assert ledger.room("w1") == D("0.002") and ledger.room("w2") == D("0.001")
    assert ledger.room("w3") == D("0.01")
    assert ledger.could_free("w1", D("0.005"))  # once w1's own call settles
    ledger.release(mine)
    ledger.settle(ledger.reserve("w1", "c", "t1", "claude-haiku-4-5", D("0.01")), Usage(8000, 0))
    assert not ledger.could_free("w1", D("0.005"))  # w2's call cannot free w1's budget


def test_tiny_costs_print_without_an_exponent() -> None:
    ledger = CostLedger(TABLE, budget=None)
    reservation = ledger.reserve("w", "r", "t", "gpt-5-nano", D(1))
    assert reservation is not None
    ledger.settle(reservation, Usage(cache_read_tokens=1))
    assert ledger.totals()["spent"] == "0.000000005"


# ---- model tiers -----------------------------------------------------------------------


def test_a_tier_maps_to_a_model_and_anything_else_is_an_exact_id() -> None:
    assert resolve_model("anthropic", "sonnet") == "claude-sonnet-4-5"
    assert resolve_model("openai", "haiku") == "gpt-5-mini"
    assert resolve_model("anthropic", "claude-opus-4-5") == "claude-opus-4-5"
    assert resolve_model("scripted", "sonnet") == "sonnet"  # no tiers for this provider


def test_a_user_file_overrides_single_tiers(tmp_path: Path) -> None:
    user = tmp_path / "models.json"
    user.write_text('{"anthropic": {"opus": "claude-opus-4-5"}, "ollama": {"haiku": "qwen3"}}')
    assert resolve_model("anthropic", "opus", user) == "claude-opus-4-5"
    assert resolve_model("anthropic", "haiku", user) == "claude-haiku-4-5"
    assert resolve_model("ollama", "haiku", user) == "qwen3"
    assert json.loads(DEFAULT_MODELS.read_text())["anthropic"]["opus"] == "claude-opus-4-1"


@pytest.mark.parametrize(
    "text", ['{"anthropic": "claude"}', '{"anthropic": {"opus": 4}}', "{", "[]"]
)
def test_a_broken_tier_file_is_bad_input(tmp_path: Path, text: str) -> None:
    user = tmp_path / "models.json"
    user.write_text(text)
    with pytest.raises(BadInput, match=r"models\.json"):
        resolve_model("anthropic", "opus", user)


def test_an_empty_model_name_is_bad_input() -> None:
    with pytest.raises(BadInput, match="empty"):
        resolve_model("anthropic", "  ")


# ---- stateful: the budget holds --------------------------------------------------------

MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o", "gpt-5-mini", "o4-mini"]
WORKERS, ROLES, TASKS = ["w1", "w2", "w3"], ["coder", "reviewer"], ["t1", "t2", "t3", "t4"]


def exact(usage: Usage, price: ModelPrice) -> Fraction:
    """The cost recomputed with fractions, independent of the ledger's arithmetic."""
    p = price.for_prompt(usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens)
    return (
        usage.input_tokens * Fraction(p.input)
        + usage.output_tokens * Fraction(p.output)
        + usage.cache_write_tokens * Fraction(p.cache_write)
        + usage.cache_read_tokens * Fraction(p.cache_read)
    )


class LedgerMachine(RuleBasedStateMachine):
    @initialize(
        budget=st.none() | st.integers(0, 300).map(lambda cents: D(cents) / 100),
        worker_budget=st.none() | st.integers(0, 200).map(lambda cents: D(cents) / 100),
    )
    def configure(self, budget: Decimal | None, worker_budget: Decimal | None) -> None:
        self.ledger = CostLedger(TABLE, budget, worker_budget)
        self.open: dict[int, tuple[Reservation, int, int]] = {}
        self.settled = Fraction(0)
        self.overran = False  # a provider has billed more than a reservation

    @rule(
        worker=st.sampled_from(WORKERS),
        role=st.sampled_from(ROLES),
        task=st.sampled_from(TASKS),
        model=st.sampled_from(MODELS),
        input_tokens=st.integers(0, 250_000),
        max_output=st.integers(0, 64_000),
    )
    def reserve(
        self, worker: str, role: str, task: str, model: str, input_tokens: int, max_output: int
    ) -> None:
        ledger = self.ledger
        amount = worst_case(TABLE.price(model), input_tokens, max_output)
        worker_total = sum(
            (r.amount for r, _, _ in self.open.values() if r.worker == worker), Decimal(0)
        ) + D(self.ledger.totals()["worker"].get(worker, {"cost": "0"})["cost"])
        fits = (
            ledger.budget is None or ledger.spent + ledger.reserved + amount <= ledger.budget
        ) and (ledger.worker_budget is None or worker_total + amount <= ledger.worker_budget)
        reservation = ledger.reserve_call(worker, role, task, model, input_tokens, max_output)
        assert (reservation is not None) == fits
        if reservation is not None:
            assert reservation.amount == amount
            self.open[reservation.id] = (reservation, input_tokens, max_output)
            # Even after overruns: a new reservation never reaches past either budget.
            if ledger.budget is not None:
                assert ledger.spent + ledger.reserved <= ledger.budget
            if ledger.worker_budget is not None:
                assert worker_total + amount <= ledger.worker_budget

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        reservation, input_tokens, max_output = data.draw(st.sampled_from(list(self.open.values())))
        prompt = data.draw(st.integers(0, input_tokens))
        write = data.draw(st.integers(0, prompt))
        read = data.draw(st.integers(0, prompt - write))
        usage = Usage(prompt - write - read, data.draw(st.integers(0, max_output)), write, read)
        actual = self.ledger.settle(reservation, usage)
        assert type(actual) is Decimal and actual <= reservation.amount
        assert Fraction(actual) == exact(usage, TABLE.price(reservation.model))
        self.settled += Fraction(actual)
        del self.open[reservation.id]

    @precondition(lambda self: self.open)
    @rule(data=st.data(), extra=st.integers(1, 400_000))
    def overrun(self, data: st.DataObject, extra: int) -> None:
        """The provider reports more input than was reserved for."""
        reservation, input_tokens, max_output = data.draw(st.sampled_from(list(self.open.values())))
        usage = Usage(input_tokens + extra, data.draw(st.integers(0, max_output)))
        actual = self.ledger.settle(reservation, usage)
        assert Fraction(actual) == exact(usage, TABLE.price(reservation.model))
        self.overran = self.overran or actual > reservation.amount
        self.settled += Fraction(actual)
        del self.open[reservation.id]

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def lost(self, data: st.DataObject) -> None:
        """The worker died mid-call: charged its whole reservation."""
        reservation, _, _ = data.draw(st.sampled_from(list(self.open.values())))
        assert self.ledger.lost(reservation) == reservation.amount
        self.settled += Fraction(reservation.amount)
        del self.open[reservation.id]

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        reservation, _, _ = data.draw(st.sampled_from(list(self.open.values())))
        self.ledger.release(reservation)
        del self.open[reservation.id]

    @invariant()
    def spend_never_exceeds_the_budget_unless_a_provider_overran(self) -> None:
        ledger = self.ledger
        assert type(ledger.spent) is Decimal and type(ledger.reserved) is Decimal
        if ledger.budget is not None:
            assert ledger.remaining == ledger.budget - ledger.spent - ledger.reserved
            if not self.overran:
                assert ledger.spent + ledger.reserved <= ledger.budget
        if ledger.worker_budget is not None and not self.overran:
            for worker, tally in ledger.totals()["worker"].items():
                assert D(tally["cost"]) <= ledger.worker_budget, worker
        assert ledger.reserved == sum((r.amount for r, _, _ in self.open.values()), Decimal(0))
        assert Fraction(ledger.spent) == self.settled
        assert bool(ledger.overruns) == self.overran

    @invariant()
    def every_dimension_sums_to_the_run(self) -> None:
        totals = self.ledger.totals()
        run = totals["run"]
        assert D(run["cost"]) == self.ledger.spent
        for dimension in ("worker", "role", "task", "model"):
            rows = totals[dimension].values()
            for column in run:
                total = sum(D(str(row[column])) for row in rows)
                assert total == D(str(run[column])), (dimension, column)


LedgerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = LedgerMachine.TestCase
