"""A run of a market's messages read in one go becomes one delta and one trades message
(``exchange.streams_hub.coalesce``): a book kept from the stream is the same, the
deltas still chain, and every trade comes, in order, after a delta that includes it."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.matcher.publish import encode
from exchange.streams_hub import coalesce
from tests.exchange.ws.conftest import delta as book_delta

SYMBOL = "ETH-USDC"
PRICES = ["99.00", "99.50", "100.00", "100.50", "101.00"]


def message(event: dict) -> tuple[dict, str]:
    return event, encode(event)


def delta(first: int, sequence: int, bids=(), asks=()) -> dict:
    return book_delta(SYMBOL, first, sequence, bids, asks)


def trades(*ids: int, batch: int = 0) -> dict:
    """``batch``: the last sequence of the batch that made them (test bookkeeping)."""
    return {"type": "trades", "symbol": SYMBOL, "trades": [{"id": i, "batch": batch} for i in ids]}


def apply(book: dict, event: dict) -> None:
    for side in ("bids", "asks"):
        for price, size in event[side]:
            if size == "0":
                book[side].pop(price, None)
            else:
                book[side][price] = size


levels = st.lists(
    st.tuples(st.sampled_from(PRICES), st.sampled_from(["0", "1.000", "2.500", "7.000"])),
    max_size=4,
)


@st.composite
def published(draw) -> list[tuple[dict, str]]:
    """What a matcher publishes for some batches: each batch's delta (sequences after the
    last; an expiry-only batch uses none), then its trades if it traded."""
    out, sequence, trade_id = [], draw(st.integers(1, 1000)), 0
    for _ in range(draw(st.integers(1, 25))):
        used = draw(st.integers(0, 4))
        out.append(message(delta(sequence + 1, sequence + used, draw(levels), draw(levels))))
        sequence += used
        if used and draw(st.booleans()):
            ids = range(trade_id + 1, trade_id + 1 + draw(st.integers(1, 3)))
            trade_id = ids[-1]
            out.append(message(trades(*ids, batch=sequence)))
    return out


@settings(max_examples=300, deadline=None)
@given(published(), st.data())
def test_whatever_is_read_together_a_kept_book_and_the_trades_are_the_same(messages, data):
    # The hub reads what has arrived whenever the loop comes round: any cut into runs.
    cuts = sorted(data.draw(st.sets(st.integers(1, len(messages)), max_size=len(messages))))
    bounds = zip([0, *cuts], [*cuts, len(messages)], strict=True)
    windows = [messages[a:b] for a, b in bounds if a < b]
    sent = [m for window in windows for m in coalesce(window)]

    one_by_one, from_sent = {"bids": {}, "asks": {}}, {"bids": {}, "asks": {}}
    for event, _ in messages:
        if event["type"] == "book.delta":
            apply(one_by_one, event)
    last = messages[0][0]["first_sequence"] - 1
    covered = last
    for event, text in sent:
        assert json.loads(text) == event  # the text is the event, as the sockets get it
        if event["type"] == "book.delta":
            assert event["first_sequence"] == last + 1  # still chains
            last = covered = event["sequence"]
            apply(from_sent, event)
        else:
            assert all(t["batch"] <= covered for t in event["trades"])  # after its delta
    assert from_sent == one_by_one
    assert last == max(e["sequence"] for e, _ in messages if e["type"] == "book.delta")
    assert [t for e, _ in sent if e["type"] == "trades" for t in e["trades"]] == [
        t for e, _ in messages if e["type"] == "trades" for t in e["trades"]
    ]
    assert len(sent) <= len(messages)
    # A run's delta and trades, and trades whose delta was read in the window before.
    assert len(sent) <= 3 * len(windows)
    for window in windows:
        if len(window) == 1:  # read alone: handed on as published
            assert coalesce(window) == window


def test_a_run_merges_levels_sequences_and_trades():
    sent = coalesce(
        [
            message(delta(2, 3, bids=[["99.00", "1.000"]], asks=[["101.00", "2.000"]])),
            message(trades(1, 2)),
            message(delta(4, 3, asks=[["101.00", "0"]])),  # expiry-only: no sequence
            message(delta(4, 6, bids=[["99.00", "4.000"], ["98.00", "1.000"]])),
            message(trades(3)),
        ]
    )
    assert [event for event, _ in sent] == [
        delta(2, 6, bids=[["99.00", "4.000"], ["98.00", "1.000"]], asks=[["101.00", "0"]]),
        trades(1, 2, 3),
    ]


def test_batches_that_only_expired_orders_at_a_runs_end_follow_it_apart():
    """Merged into the run, a trailing expiry would end it at 3, and a subscriber whose
    snapshot is at 3 (read before the expiry) would drop the whole as already had."""
    ending = coalesce(
        [
            message(delta(2, 3, bids=[["99.00", "1.000"]])),
            message(delta(4, 3, bids=[["98.00", "0"]])),
            message(delta(4, 3, asks=[["101.00", "0"]])),
        ]
    )
    assert [event for event, _ in ending] == [
        delta(2, 3, bids=[["99.00", "1.000"]]),
        delta(4, 3, bids=[["98.00", "0"]], asks=[["101.00", "0"]]),
    ]
    # Followed by a batch that uses a sequence, they are part of the run again.
    followed = coalesce(
        [
            *map(message, [delta(2, 3), delta(4, 3, bids=[["98.00", "0"]])]),
            message(delta(4, 4, asks=[["102.00", "1.000"]])),
        ]
    )
    assert [event for event, _ in followed] == [
        delta(2, 4, bids=[["98.00", "0"]], asks=[["102.00", "1.000"]])
    ]


def test_a_delta_that_does_not_chain_or_another_message_ends_the_run():
    gap = [message(delta(2, 2)), message(delta(5, 5)), message(delta(6, 6))]
    assert [(e["first_sequence"], e["sequence"]) for e, _ in coalesce(gap)] == [(2, 2), (5, 6)]

    other = {"type": "ticker", "symbol": SYMBOL}
    mixed = [message(delta(2, 2)), message(other), message(delta(3, 3)), message(delta(4, 4))]
    assert [e["type"] for e, _ in coalesce(mixed)] == ["book.delta", "ticker", "book.delta"]
    assert coalesce(mixed)[1] == mixed[1]


def test_trades_with_no_delta_before_them_in_the_run_pass_as_they_are():
    early = [message(trades(7)), message(delta(3, 3)), message(trades(8))]
    assert coalesce(early) == early
