"""Portfolio statistics against values worked out by hand on known series.

The main series: values 1000, 1100, 1045, 1454, 1308.6, 1439.46 with a deposit of 200
in the fourth period. Returns net of flows:
    1100 / 1000 - 1            =  0.10
    1045 / 1100 - 1            = -0.05
    (1454 - 200) / 1045 - 1    =  0.20
    1308.6 / 1454 - 1          = -0.10
    1439.46 / 1308.6 - 1       =  0.10
mean 0.05; deviations 0.05, -0.10, 0.15, -0.15, 0.05; squares sum to 0.06; sample
variance 0.06 / 4 = 0.015, standard deviation sqrt(0.015) = 0.122474487...
"""

import math

import pytest

from portfolio.metrics import (
    Point,
    average_trade_size,
    max_drawdown,
    period_returns,
    roi,
    sharpe_ratio,
    summarize,
    value_at_risk,
    volatility,
    win_rate,
)

SERIES = [
    Point(1000),
    Point(1100),
    Point(1045),
    Point(1454, net_flow=200),
    Point(1308.6),
    Point(1439.46),
]
RETURNS = [0.10, -0.05, 0.20, -0.10, 0.10]


def test_period_returns_are_net_of_deposits_and_withdrawals():
    assert period_returns(SERIES) == pytest.approx(RETURNS)


def test_a_period_starting_from_nothing_has_no_return():
    # Funded with 500 from empty, then 550: only the second period has a return.
    series = [Point(0), Point(500, net_flow=500), Point(550)]
    assert period_returns(series) == pytest.approx([0.10])


def test_a_withdrawal_is_not_a_loss():
    # 1000 grows 10 % to 1100, of which 600 is withdrawn at the period's end: 500 left.
    assert period_returns([Point(1000), Point(500, net_flow=-600)]) == pytest.approx([0.10])


def test_volatility_is_the_sample_standard_deviation_annualised_by_root_time():
    assert volatility(RETURNS) == pytest.approx(0.12247448714)
    # sqrt(0.015 * 365) = sqrt(5.475)
    assert volatility(RETURNS, periods_per_year=365) == pytest.approx(2.33987179)
    assert volatility([0.01]) is None


def test_sharpe_ratio_annualised_with_and_without_a_risk_free_rate():
    # 0.05 / sqrt(0.015) * sqrt(365) = sqrt(365 / 6) = 7.79957...
    assert sharpe_ratio(RETURNS, periods_per_year=365) == pytest.approx(7.7995726)
    # 3.65 % a year is 0.0001 a period: 0.0499 / 0.1224744871 * 19.1049731 = 7.78397...
    assert sharpe_ratio(RETURNS, periods_per_year=365, risk_free_rate=0.0365) == pytest.approx(
        7.7839734
    )


def test_sharpe_ratio_is_undefined_without_variation():
    assert sharpe_ratio([0.01, 0.01, 0.01], periods_per_year=365) is None
    assert sharpe_ratio([0.01], periods_per_year=365) is None


def test_max_drawdown_follows_the_growth_of_one_unit_not_the_deposits():
    # Growth: 1, 1.1, 1.045, 1.254, 1.1286, 1.24146. Falls: 1.1 -> 1.045 is 5 %,
    # 1.254 -> 1.1286 is 10 %. The deposit that lifted the value to 1454 is no gain.
    assert max_drawdown(RETURNS) == pytest.approx(0.10)
    assert max_drawdown([0.1, 0.2]) == 0
    # 1 -> 0.5 -> 0.75 -> 0.375: the fall from 1 to 0.375 is 62.5 %.
    assert max_drawdown([-0.5, 0.5, -0.5]) == pytest.approx(0.625)


def test_historical_var_is_the_nearest_rank_loss():
    # Five returns: k = ceil(0.05 * 5) = 1, the worst: -0.10.
    assert value_at_risk(RETURNS) == pytest.approx(0.10)
    # Forty returns: k = ceil(0.05 * 40) = 2, the second worst: -0.04.
    forty = [-0.07, -0.04, -0.03] + [0.01] * 37
    assert value_at_risk(forty) == pytest.approx(0.04)
    # Twenty: 0.05 * 20 is exactly 1 (not 1.0000000000000009), so the worst.
    twenty = [-0.06, -0.05] + [0.02] * 18
    assert value_at_risk(twenty) == pytest.approx(0.06)
    # 99 %: k = ceil(0.01 * 40) = 1.
    assert value_at_risk(forty, confidence=0.99) == pytest.approx(0.07)
    assert value_at_risk([]) is None


def test_win_rate_and_average_trade_size():
    assert win_rate([10, -5, 0, 3]) == 0.5  # a zero gain is not a win
    assert win_rate([]) is None
    assert average_trade_size([100, 250, 50]) == pytest.approx(133.3333333)
    assert average_trade_size([]) is None


def test_roi_is_the_gain_over_the_capital_put_in():
    # Gain 1439.46 - 1000 - 200 = 239.46 on 1000 + 200 put in: 0.19955.
    assert roi(SERIES) == pytest.approx(0.19955)
    # A withdrawal is no capital put in: 1000 -> 1100 -> 600 after 600 out.
    # Gain 600 - 1000 + 600 = 200 on 1000.
    assert roi([Point(1000), Point(1100), Point(600, net_flow=-600)]) == pytest.approx(0.2)
    assert roi([Point(0), Point(0)]) is None


def test_summary_gathers_the_statistics():
    summary = summarize(SERIES, periods_per_year=365)
    assert summary.returns == pytest.approx(RETURNS)
    assert summary.volatility == pytest.approx(math.sqrt(5.475))
    assert summary.sharpe_ratio == pytest.approx(7.7995726)
    assert summary.max_drawdown == pytest.approx(0.10)
    assert summary.value_at_risk_95 == pytest.approx(0.10)
    assert summary.roi == pytest.approx(0.19955)
