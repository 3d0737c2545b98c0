"""The market simulator against real PostgreSQL: demo traders trading through the order
services, matched by the real matcher, leave a book that trades and books that balance."""

import pytest
from django.core.management import call_command

from exchange.matcher.market import MarketMatcher
from exchange.models import CommandKind, CommandStatus, Order, OrderCommand, Trade
from exchange.simulator import SimulatorConfig, simulator_for_demo
from portfolio.reconciliation import ledger_check

pytestmark = pytest.mark.django_db

STEPS = 160
MATCH_EVERY = 8


@pytest.fixture
def demo(tmp_path):
    call_command("seed_demo", password_file=tmp_path / "pw")


def drain(matchers: list[MarketMatcher]) -> None:
    for matcher in matchers:
        while matcher.run_batch().commands:
            pass


def test_simulated_flow_trades_through_the_services_and_the_books_balance(demo):
    simulator = simulator_for_demo(seed=7)
    matchers = [MarketMatcher(state.market) for state in simulator.states]
    assert len(matchers) == 3

    for step in range(1, STEPS + 1):
        simulator.step()
        if step % MATCH_EVERY == 0:
            drain(matchers)
    drain(matchers)

    stats = simulator.stats
    assert stats.steps == STEPS
    assert 0 < stats.sent <= STEPS  # at most one service call a step
    simulated = Order.objects.filter(client_order_id__startswith=f"sim-{simulator.run_id}-")
    assert simulated.count() == stats.placed > STEPS // 2
    commands = OrderCommand.objects.all()
    assert commands.filter(kind=CommandKind.PLACE).count() == stats.placed
    assert commands.filter(kind=CommandKind.CANCEL).count() == stats.cancelled > 0
    assert {t.market.symbol for t in Trade.objects.select_related("market")} == {
        s.market.symbol for s in simulator.states
    }
    assert Trade.objects.count() >= 20
    assert not commands.filter(status=CommandStatus.PENDING).exists()
    assert ledger_check() == []


def test_a_refused_order_is_counted_and_the_simulation_goes_on(demo):
    # Quotes far beyond the market maker's funds: every one is refused.
    simulator = simulator_for_demo(
        seed=3, config=SimulatorConfig(quote_notional=(5e7, 6e7), taker_share=0)
    )
    for _ in range(12):
        simulator.step()
    assert simulator.stats.rejected == {"INSUFFICIENT_FUNDS": 12}
    assert simulator.stats.placed == 0
    assert not Order.objects.exists()
    assert ledger_check() == []
