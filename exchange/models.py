"""The exchange's core schema: assets, markets, trader accounts, orders, the matcher's
command journal, order status history, trades and order-book snapshots.

Every rule the platform depends on is enforced here by PostgreSQL as well as by the
services: CHECK and UNIQUE constraints in ``Meta.constraints``, and django-pgtrigger
triggers (state machines, read-only columns, append-only history, cross-row checks)
in ``Meta.triggers``. A bug in Python, a raw SQL session or a bad migration cannot
put an order or a trade into a state the platform does not allow.
"""

from __future__ import annotations

from decimal import Decimal

import pgtrigger
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import F, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Abs, Length, Now

from dex.db import (
    ADDRESS_REGEX,
    AddressField,
    AmountField,
    CreatedAtField,
    FastLoad,
    HashField,
    PriceField,
    RateField,
    UpdatedAtField,
    append_only_triggers,
    created_as_trigger,
    truncate_keeps_history,
    truncate_keeps_references,
    updated_at_trigger,
)

# --------------------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------------------


class Side(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(models.TextChoices):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_LIMIT = "STOP_LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"


# Order types that carry a limit price, and those that carry a trigger (stop) price.
LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
MARKET_TYPES = (OrderType.MARKET, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)
STOP_TYPES = (
    OrderType.STOP_LIMIT,
    OrderType.STOP_MARKET,
    OrderType.TAKE_PROFIT_LIMIT,
    OrderType.TAKE_PROFIT_MARKET,
)


class TimeInForce(models.TextChoices):
    GTC = "GTC", "Good till cancelled"
    GTT = "GTT", "Good till time"
    IOC = "IOC", "Immediate or cancel"
    FOK = "FOK", "Fill or kill"


class OrderStatus(models.TextChoices):
    PENDING = "PENDING"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNTRIGGERED = "UNTRIGGERED"


TERMINAL_STATUSES = (
    OrderStatus.FILLED,
    OrderStatus.CANCELLED,
    OrderStatus.REJECTED,
    OrderStatus.EXPIRED,
)
# Orders the matcher holds in memory: on the book, or waiting for their trigger price.
LIVE_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNTRIGGERED)

# Every move an order's status may make; terminal states have no way out. An order is
# accepted by the web tier as PENDING and everything after is decided by the matcher.
ORDER_STATUS_TRANSITIONS = [
    *(
        (OrderStatus.PENDING, to)
        for to in (
            OrderStatus.OPEN,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
            OrderStatus.EXPIRED,
            OrderStatus.UNTRIGGERED,
        )
    ),
    *(
        (OrderStatus.UNTRIGGERED, to)
        for to in (
            OrderStatus.OPEN,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
        )
    ),
    *(
        (OrderStatus.OPEN, to)
        for to in (
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
        )
    ),
    *(
        (OrderStatus.PARTIALLY_FILLED, to)
        for to in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED)
    ),
]


class SelfTradePrevention(models.TextChoices):
    EXPIRE_TAKER = "EXPIRE_TAKER"
    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"
    DECREMENT = "DECREMENT"


class MarketStatus(models.TextChoices):
    PRE_OPEN = "PRE_OPEN"
    OPEN = "OPEN"
    HALTED = "HALTED"
    CLOSED = "CLOSED"


class AccountStatus(models.TextChoices):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class ApiKeyScope(models.TextChoices):
    READ = "read"
    TRADE = "trade"
    WITHDRAW = "withdraw"


class CommandKind(models.TextChoices):
    PLACE = "PLACE"
    CANCEL = "CANCEL"
    AMEND = "AMEND"
    CANCEL_ALL = "CANCEL_ALL"
    HALT = "HALT"
    RESUME = "RESUME"
    # A change of the market's fees, minimums or price band (payload: the full new set),
    # applied by the matcher at its place in the journal.
    SET_RULES = "SET_RULES"


# The LISTEN/NOTIFY channel on which new commands wake the matcher.
MATCHER_CHANNEL = "dex_order_commands"


class CommandStatus(models.TextChoices):
    PENDING = "PENDING"
    DONE = "DONE"


class SettlementStatus(models.TextChoices):
    PENDING = "PENDING"
    SETTLING = "SETTLING"
    SETTLED = "SETTLED"
    FAILED = "FAILED"


# --------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------


class Asset(models.Model):
    """A token traded on the venue. Balances are kept to 8 decimal places whatever the
    token's on-chain ``decimals``."""

    symbol = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=64)
    decimals = models.PositiveSmallIntegerField(help_text="On-chain decimals of the token.")
    contract_address = AddressField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(
                condition=Q(symbol__regex=r"^[A-Z][A-Z0-9]{1,11}$"), name="asset_symbol_format"
            ),
            models.CheckConstraint(condition=Q(decimals__lte=36), name="asset_decimals_range"),
            models.CheckConstraint(
                condition=Q(contract_address__isnull=True)
                | Q(contract_address__regex=ADDRESS_REGEX),
                name="asset_contract_address_format",
            ),
        ]
        triggers = [updated_at_trigger()]

    def __str__(self) -> str:
        return self.symbol


def _trimmed_scale(field: str) -> models.Func:
    return models.Func(
        models.Func(F(field), function="trim_scale"),
        function="scale",
        output_field=models.IntegerField(),
    )


class Market(models.Model):
    """A spot market (``BASE-QUOTE``) and its trading rules."""

    symbol = models.CharField(max_length=25, unique=True)
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="base_markets")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="quote_markets")
    tick_size = PriceField(help_text="Smallest price increment.")
    lot_size = AmountField(help_text="Smallest quantity increment.")
    min_quantity = AmountField()
    min_notional = AmountField(help_text="Smallest price × quantity, in the quote asset.")
    maker_fee_rate = RateField(help_text="Fraction of notional; negative is a rebate.")
    taker_fee_rate = RateField(help_text="Fraction of notional.")
    price_band = RateField(
        default="0.05",
        help_text="A market order never trades further than this fraction from the best price.",
    )
    status = models.CharField(
        max_length=16, choices=MarketStatus.choices, default=MarketStatus.PRE_OPEN
    )
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(
                condition=Q(symbol__regex=r"^[A-Z][A-Z0-9]{1,11}-[A-Z][A-Z0-9]{1,11}$"),
                name="market_symbol_format",
            ),
            models.UniqueConstraint(fields=["base", "quote"], name="market_unique_pair"),
            models.CheckConstraint(condition=~Q(base=F("quote")), name="market_base_not_quote"),
            models.CheckConstraint(
                condition=Q(tick_size__gt=0, lot_size__gt=0), name="market_steps_positive"
            ),
            # Every fill's notional (price × quantity) must be exact in an 8-place amount
            # column, so the tick's and the lot's decimal places may not add up past 8.
            models.CheckConstraint(
                condition=models.lookups.LessThanOrEqual(
                    _trimmed_scale("tick_size") + _trimmed_scale("lot_size"), 8
                ),
                name="market_notional_exact",
            ),
            models.CheckConstraint(
                condition=Q(min_quantity__gte=F("lot_size"))
                & models.lookups.Exact(
                    models.Func(F("min_quantity"), F("lot_size"), function="mod"), 0
                ),
                name="market_min_quantity_on_lot",
            ),
            models.CheckConstraint(condition=Q(min_notional__gte=0), name="market_min_notional"),
            # A maker rebate may never exceed the taker fee: the venue never pays out on
            # a trade.
            models.CheckConstraint(
                condition=Q(taker_fee_rate__gte=0, taker_fee_rate__lte="0.1")
                # A maker pays at most what a taker pays: a resting buy's hold reserves
                # its fee at the taker rate, whichever side of the fill it ends on.
                & Q(
                    maker_fee_rate__gte=-F("taker_fee_rate"),
                    maker_fee_rate__lte=F("taker_fee_rate"),
                ),
                name="market_fee_rates",
            ),
            models.CheckConstraint(
                condition=Q(price_band__gt=0, price_band__lt=1), name="market_price_band"
            ),
        ]
        triggers = [
            updated_at_trigger(),
            pgtrigger.FSM(
                name="status_transitions",
                field="status",
                transitions=[
                    (MarketStatus.PRE_OPEN, MarketStatus.OPEN),
                    (MarketStatus.PRE_OPEN, MarketStatus.CLOSED),
                    (MarketStatus.OPEN, MarketStatus.HALTED),
                    (MarketStatus.HALTED, MarketStatus.OPEN),
                    (MarketStatus.OPEN, MarketStatus.CLOSED),
                    (MarketStatus.HALTED, MarketStatus.CLOSED),
                ],
            ),
            pgtrigger.ReadOnly(name="pair_read_only", fields=["symbol", "base", "quote"]),
        ]

    def __str__(self) -> str:
        return self.symbol


# The rules of a trading market that may change while it trades, each only through a
# SET_RULES command. Tick and lot size are fixed: changing them would move resting
# orders off the grid.
MARKET_RULE_FIELDS = (
    "maker_fee_rate",
    "taker_fee_rate",
    "min_quantity",
    "min_notional",
    "price_band",
)


# --------------------------------------------------------------------------------------
# Traders
# --------------------------------------------------------------------------------------


class Account(models.Model):
    """A trader, identified by the wallet that signs their orders."""

    wallet_address = AddressField(unique=True)
    label = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=8, choices=AccountStatus.choices, default=AccountStatus.ACTIVE
    )
    country = models.CharField(
        max_length=2, blank=True, help_text="ISO 3166-1 alpha-2 country of residence."
    )
    kyc_tier = models.PositiveSmallIntegerField(default=0)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(wallet_address__regex=ADDRESS_REGEX),
                name="account_wallet_address_format",
            ),
            models.CheckConstraint(
                condition=Q(country="") | Q(country__regex=r"^[A-Z]{2}$"),
                name="account_country_format",
            ),
        ]
        triggers = [
            updated_at_trigger(),
            pgtrigger.FSM(
                name="status_transitions",
                field="status",
                transitions=[
                    (AccountStatus.ACTIVE, AccountStatus.FROZEN),
                    (AccountStatus.FROZEN, AccountStatus.ACTIVE),
                    (AccountStatus.ACTIVE, AccountStatus.CLOSED),
                    (AccountStatus.FROZEN, AccountStatus.CLOSED),
                ],
            ),
            pgtrigger.ReadOnly(name="wallet_read_only", fields=["wallet_address"]),
        ]

    def __str__(self) -> str:
        return self.label or self.wallet_address


class ApiKey(models.Model):
    """A trader's API key. Only a SHA-256 of the secret is stored; its scopes are fixed
    at creation (a trader who needs other scopes creates another key)."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=64)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public id of the key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=16, choices=ApiKeyScope.choices))
    created_at = CreatedAtField()
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(key_hash__regex=r"^[0-9a-f]{64}$"), name="apikey_hash_format"
            ),
            models.CheckConstraint(
                condition=Q(scopes__len__gt=0) & Q(scopes__contained_by=ApiKeyScope.values),
                name="apikey_scopes_valid",
            ),
            models.CheckConstraint(
                condition=Q(revoked_at__isnull=True) | Q(revoked_at__gte=F("created_at")),
                name="apikey_revoked_after_created",
            ),
        ]
        indexes = [models.Index(fields=["account", "-created_at"], name="apikey_account_idx")]
        triggers = [
            pgtrigger.ReadOnly(
                name="identity_read_only",
                fields=["account", "prefix", "key_hash", "scopes", "created_at"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


# --------------------------------------------------------------------------------------
# Triggers for the rows the matcher writes thousands of a second
# --------------------------------------------------------------------------------------
#
# A row trigger's PL/pgSQL function costs PostgreSQL tens of microseconds a call (pgtrigger
# also checks its ignore list in each); a trigger's WHEN clause is evaluated in C. These
# put the rule in the WHEN clause, so the function runs only to refuse.


def status_machine(*, field: str, transitions: list[tuple[str, str]]) -> pgtrigger.Trigger:
    """The rule of ``pgtrigger.FSM`` (a changed ``field`` must make one of
    ``transitions``, same error), checked in the trigger's WHEN clause."""
    allowed = ", ".join(f"'{before}:{after}'" for before, after in transitions)
    old, new = f'OLD."{field}"', f'NEW."{field}"'
    return pgtrigger.Trigger(
        name="status_transitions",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        condition=pgtrigger.Condition(
            f"{old} IS DISTINCT FROM {new}"
            f" AND concat({old}, ':', {new}) <> ALL (ARRAY[{allowed}]::text[])"
        ),
        func=(
            f'RAISE EXCEPTION \'pgtrigger: Invalid transition of field "{field}" from'
            f' "%" to "%" on table %\', {old}, {new}, TG_TABLE_NAME; RETURN NULL;'
        ),
    )


# Every column of history that names an order, which must be in the live table or the
# archive (order_references_check on inserts, truncate_keeps_references on a TRUNCATE).
ORDER_REFERENCES = (
    "exchange_trade.maker_order_id",
    "exchange_trade.taker_order_id",
    "exchange_ordercommand.order_id",
    "exchange_orderstatushistory.order_id",
    "portfolio_ledgertransaction.order_id",
    "portfolio_posting.order_id",
)


def finished_read_only(*statuses: str, noun: str) -> pgtrigger.Trigger:
    """A row in one of ``statuses`` is history: no UPDATE touches it again. The rule is
    on the old row's status alone, so the rows a writer moves while they are live cost
    one comparison and never run the function."""
    finished = ", ".join(f"'{status}'" for status in statuses)
    return pgtrigger.Trigger(
        name="finished_read_only",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        condition=pgtrigger.Condition(f'OLD."status" IN ({finished})'),
        func=(
            f"RAISE EXCEPTION 'pgtrigger: Cannot update {noun} %: it is %, and read-only',"
            " OLD.id, OLD.status; RETURN NULL;"
        ),
    )


def updated_at_stamp() -> pgtrigger.Trigger:
    """``dex.db.updated_at_trigger``, skipped when the UPDATE already wrote ``now()``
    there itself (as the matcher and the posting trigger do): the column ends up the
    same either way."""
    return pgtrigger.Trigger(
        name="set_updated_at",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        condition=pgtrigger.Condition("NEW.updated_at IS DISTINCT FROM now()"),
        func="NEW.updated_at := now(); RETURN NEW;",
    )


def order_references_check(*columns: str) -> pgtrigger.Trigger:
    """The rule of a foreign key to ``exchange_order`` for rows being inserted, checked
    once per statement: every order ``columns`` name must be in ``exchange_order``.

    Tables that keep history (trades, the journal, status history, the ledger) name
    orders without a foreign key constraint, so that an order that finished long ago
    can move to ``exchange_orderarchive`` (``exchange.services.archiving``) while its
    history stays. Together with the order table's ``delete_only_archived`` trigger and
    the append-only archive, every order a history row names is in one of the two
    tables, always: new rows may only name a live-table order, and an order leaves the
    live table only after its final state is in the archive, which never loses a row.
    """
    missing = " OR ".join(
        f'(n."{column}" IS NOT NULL AND NOT EXISTS '
        f'(SELECT 1 FROM exchange_order o WHERE o.id = n."{column}"))'
        for column in columns
    )
    return pgtrigger.Trigger(
        name="order_references",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Insert,
        referencing=pgtrigger.Referencing(new="new_rows"),
        func=(
            f"IF EXISTS (SELECT 1 FROM new_rows n WHERE {missing}) THEN"
            ' RAISE EXCEPTION \'insert on table "%" names an order that is not in'
            " exchange_order', TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation';"
            " END IF; RETURN NULL;"
        ),
    )


# --------------------------------------------------------------------------------------
# Orders and the matcher's journal
# --------------------------------------------------------------------------------------

_ORDER_DELETE_CHECK = """
    IF NOT EXISTS (
        SELECT 1 FROM exchange_orderarchive a
         WHERE a.order_id = OLD.id
           AND to_jsonb(a) - 'order_id' - 'archived_at' = to_jsonb(OLD) - 'id'
    ) THEN
        RAISE EXCEPTION 'order % cannot be deleted: an order leaves exchange_order only for '
            'the archive, with its final state copied there first', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    -- Nor while money is held for it: a finished order's hold was released in full.
    IF (SELECT sum(p.amount) FROM portfolio_posting p WHERE p.order_id = OLD.id) <> 0 THEN
        RAISE EXCEPTION 'order % cannot be archived: funds are still held for it', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN OLD;
"""

# Raised with the name of the live table's own constraint, so the services read a clash
# with an archived order exactly as a clash with a live one.
_ORDER_UNIQUE_WITH_ARCHIVE = """
    IF EXISTS (SELECT 1 FROM exchange_orderarchive a
                WHERE a.account_id = NEW.account_id AND a.nonce = NEW.nonce) THEN
        RAISE EXCEPTION 'nonce % of account % was used by an archived order',
            NEW.nonce, NEW.account_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'order_unique_nonce';
    END IF;
    IF EXISTS (SELECT 1 FROM exchange_orderarchive a
                WHERE a.account_id = NEW.account_id
                  AND a.client_order_id = NEW.client_order_id) THEN
        RAISE EXCEPTION 'client order id % of account % names an archived order',
            NEW.client_order_id, NEW.account_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'order_unique_client_order_id';
    END IF;
    IF EXISTS (SELECT 1 FROM exchange_orderarchive a WHERE a.order_hash = NEW.order_hash) THEN
        RAISE EXCEPTION 'order hash % belongs to an archived order', NEW.order_hash
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'exchange_order_order_hash_key';
    END IF;
    RETURN NULL;
"""

_ORDER_INSERT_CHECK = """
    SELECT tick_size, lot_size INTO m_tick, m_lot FROM exchange_market WHERE id = NEW.market_id;
    IF NEW.price IS NOT NULL AND mod(NEW.price, m_tick) <> 0 THEN
        RAISE EXCEPTION 'order price % is not a multiple of the tick size %', NEW.price, m_tick
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.protection_price IS NOT NULL AND mod(NEW.protection_price, m_tick) <> 0 THEN
        RAISE EXCEPTION 'order protection price % is not a multiple of the tick size %',
            NEW.protection_price, m_tick USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.stop_price IS NOT NULL AND mod(NEW.stop_price, m_tick) <> 0 THEN
        RAISE EXCEPTION 'order stop price % is not a multiple of the tick size %',
            NEW.stop_price, m_tick USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.quantity IS NOT NULL AND mod(NEW.quantity, m_lot) <> 0 THEN
        RAISE EXCEPTION 'order quantity % is not a multiple of the lot size %', NEW.quantity, m_lot
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.display_quantity IS NOT NULL AND mod(NEW.display_quantity, m_lot) <> 0 THEN
        RAISE EXCEPTION 'order display quantity % is not a multiple of the lot size %',
            NEW.display_quantity, m_lot USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
"""

_STATUS_HISTORY_INSERT = """
INSERT INTO exchange_orderstatushistory
    (order_id, from_status, to_status, filled, remaining, sequence, reason, changed_at)
VALUES
    (NEW.id, {from_status}, NEW.status, NEW.filled, NEW.remaining, NEW.sequence, NEW.reason,
     clock_timestamp());
RETURN NULL;
"""


_HEX_REGEX = r"^0x[0-9a-f]+$"  # with a length: HASH_REGEX, SIGNATURE_REGEX (dex.db)

# The order's id joins the old and new rows: it is read-only (identity_read_only).
_STATUS_HISTORY_INSERT_CHANGED = """
INSERT INTO exchange_orderstatushistory
    (order_id, from_status, to_status, filled, remaining, sequence, reason, changed_at)
SELECT n.id, o.status, n.status, n.filled, n.remaining, n.sequence, n.reason, clock_timestamp()
  FROM new_orders n JOIN old_orders o ON o.id = n.id
 WHERE o.status IS DISTINCT FROM n.status
 ORDER BY n.id;
RETURN NULL;
"""


class Order(FastLoad, models.Model):
    """An order as signed by the trader (EIP-712) and as the matcher has worked it.

    Quantities are in the base asset. A market BUY may instead carry ``quote_quantity``
    (spend this much quote), in which case ``quantity`` and ``remaining`` are NULL.
    ``filled_quote`` is the executed notional; ``average_price`` is its ratio to
    ``filled``. ``sequence`` is the matcher's time priority within the market.
    """

    # Indexed by order_unique_nonce (account, nonce) and order_account_recent_idx: a
    # separate index of the foreign key would only slow every write of an order.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="orders")
    client_order_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=20, choices=OrderType.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices)
    post_only = models.BooleanField(default=False)
    self_trade_prevention = models.CharField(
        max_length=12,
        choices=SelfTradePrevention.choices,
        default=SelfTradePrevention.EXPIRE_TAKER,
    )
    price = PriceField(null=True, blank=True)
    stop_price = PriceField(null=True, blank=True)
    quantity = AmountField(null=True, blank=True)
    quote_quantity = AmountField(null=True, blank=True)
    display_quantity = AmountField(
        null=True, blank=True, help_text="Iceberg: the part shown on the book."
    )
    protection_price = PriceField(
        null=True,
        blank=True,
        help_text="Market buys by quantity: the worst price the trader accepts; funds are "
        "held at this price and the matcher never fills above it.",
    )
    # The fee rates in force for this trader when the order was accepted. Holds reserve
    # the taker rate, so a hold is exact whatever happens to the market's rates later.
    maker_fee_rate = RateField(default=0)
    taker_fee_rate = RateField(default=0)
    filled = AmountField(default=0)
    remaining = AmountField(null=True, blank=True)
    filled_quote = AmountField(default=0)
    average_price = PriceField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    reason = models.CharField(max_length=64, blank=True, help_text="Why rejected/cancelled.")
    # EIP-712: nonce is a uint256, so NUMERIC(78, 0).
    nonce = models.DecimalField(max_digits=78, decimal_places=0)
    signature = models.CharField(max_length=132)
    order_hash = HashField()  # unique: see Meta
    expires_at = models.DateTimeField(null=True, blank=True, help_text="GTT expiry.")
    sequence = models.BigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "nonce"], name="order_unique_nonce"),
            models.UniqueConstraint(
                fields=["account", "client_order_id"], name="order_unique_client_order_id"
            ),
            # A constraint rather than unique=True, which also builds a varchar_pattern_ops
            # index for LIKE prefixes: nothing searches hashes by prefix, and every order
            # written (each placement, and each of the matcher's updates that moves it
            # in an index) would write that index too. The name is the one unique=True
            # gave it, which the archive's trigger reports.
            models.UniqueConstraint(fields=["order_hash"], name="exchange_order_order_hash_key"),
            models.UniqueConstraint(
                fields=["market", "sequence"],
                condition=Q(sequence__isnull=False),
                name="order_unique_sequence",
            ),
            # PostgreSQL checks every CHECK on every UPDATE, and a bounded repetition
            # ({64}, {130}) costs it tens of microseconds per row; the matcher updates
            # thousands of orders a second. These say the same with an unbounded class
            # and a length.
            models.CheckConstraint(
                condition=Q(client_order_id__regex=r"^[A-Za-z0-9_.:-]+$")
                & models.lookups.LessThanOrEqual(Length("client_order_id"), 64),
                name="order_client_order_id_format",
            ),
            # Size: a base quantity, or (market buys only) a quote amount to spend.
            models.CheckConstraint(
                condition=Q(quantity__isnull=False, quote_quantity__isnull=True)
                | Q(
                    quantity__isnull=True,
                    quote_quantity__isnull=False,
                    type=OrderType.MARKET,
                    side=Side.BUY,
                ),
                name="order_quantity_or_quote_quantity",
            ),
            models.CheckConstraint(
                condition=Q(quantity__isnull=True) | Q(quantity__gt=0),
                name="order_quantity_positive",
            ),
            models.CheckConstraint(
                condition=Q(quote_quantity__isnull=True) | Q(quote_quantity__gt=0),
                name="order_quote_quantity_positive",
            ),
            models.CheckConstraint(
                condition=Q(filled__gte=0)
                & (Q(quantity__isnull=True) | Q(filled__lte=F("quantity"))),
                name="order_filled_within_quantity",
            ),
            models.CheckConstraint(
                condition=Q(quantity__isnull=True, remaining__isnull=True)
                | Q(
                    quantity__isnull=False,
                    remaining__isnull=False,
                    remaining=F("quantity") - F("filled"),
                ),
                name="order_remaining_is_quantity_minus_filled",
            ),
            # The average price is filled_quote / filled to 8 places: the matcher rounds
            # half to even, which PostgreSQL's round() does not do, so the check is that
            # it lies within one unit of the 8th place (exact: no division).
            models.CheckConstraint(
                condition=(
                    Q(filled__gt=0, filled_quote__gt=0, average_price__gt=0)
                    & models.lookups.LessThan(
                        Abs(F("average_price") * F("filled") - F("filled_quote")),
                        F("filled") * Decimal("0.00000001"),
                    )
                )
                | Q(filled=0, filled_quote=0, average_price__isnull=True),
                name="order_fill_totals_consistent",
            ),
            models.CheckConstraint(
                condition=Q(quote_quantity__isnull=True) | Q(filled_quote__lte=F("quote_quantity")),
                name="order_filled_quote_within_quote_quantity",
            ),
            # A limit price exactly for the limit types, a trigger price exactly for the
            # stop and take-profit types.
            models.CheckConstraint(
                condition=Q(type__in=LIMIT_TYPES, price__isnull=False, price__gt=0)
                | (~Q(type__in=LIMIT_TYPES) & Q(price__isnull=True)),
                name="order_price_iff_limit_type",
            ),
            models.CheckConstraint(
                condition=Q(type__in=STOP_TYPES, stop_price__isnull=False, stop_price__gt=0)
                | (~Q(type__in=STOP_TYPES) & Q(stop_price__isnull=True)),
                name="order_stop_price_iff_stop_type",
            ),
            # Market types are IOC: they take what the book has and never rest. Orders
            # finished before this held (market types were once accepted FOK) keep what
            # they were: finished, they never change.
            models.CheckConstraint(
                condition=Q(type__in=LIMIT_TYPES)
                | (
                    Q(time_in_force=TimeInForce.IOC)
                    & ~Q(status__in=[OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED])
                )
                | Q(time_in_force=TimeInForce.FOK, status__in=TERMINAL_STATUSES),
                name="order_market_types_do_not_rest",
            ),
            models.CheckConstraint(
                condition=Q(
                    type__in=MARKET_TYPES,
                    side=Side.BUY,
                    quantity__isnull=False,
                    protection_price__isnull=False,
                    protection_price__gt=0,
                )
                | (
                    ~Q(type__in=MARKET_TYPES, side=Side.BUY, quantity__isnull=False)
                    & Q(protection_price__isnull=True)
                ),
                name="order_protection_price_for_market_buys",
            ),
            # A maker pays at most what a taker pays, as the market's and the fee tier's
            # rates do: a resting buy holds for its fee at the taker rate. Orders finished
            # before markets kept that rule keep the rates they had.
            models.CheckConstraint(
                condition=Q(taker_fee_rate__gte=0, maker_fee_rate__gte=-F("taker_fee_rate"))
                & (Q(maker_fee_rate__lte=F("taker_fee_rate")) | Q(status__in=TERMINAL_STATUSES)),
                name="order_fee_rates",
            ),
            models.CheckConstraint(
                condition=Q(time_in_force=TimeInForce.GTT, expires_at__isnull=False)
                | (~Q(time_in_force=TimeInForce.GTT) & Q(expires_at__isnull=True)),
                name="order_expiry_iff_gtt",
            ),
            # Post-only is for plain limit orders that may rest. Stop and take-profit
            # limits accepted post-only before this held were rejected by the matcher,
            # and stay as they finished.
            models.CheckConstraint(
                condition=Q(post_only=False)
                | Q(type=OrderType.LIMIT, time_in_force__in=[TimeInForce.GTC, TimeInForce.GTT])
                | Q(
                    type__in=LIMIT_TYPES,
                    time_in_force__in=[TimeInForce.GTC, TimeInForce.GTT],
                    status__in=TERMINAL_STATUSES,
                ),
                name="order_post_only_rests",
            ),
            models.CheckConstraint(
                condition=Q(display_quantity__isnull=True)
                | Q(
                    display_quantity__gt=0,
                    display_quantity__lte=F("quantity"),
                    type__in=LIMIT_TYPES,
                    time_in_force__in=[TimeInForce.GTC, TimeInForce.GTT],
                ),
                name="order_iceberg_rules",
            ),
            # Status agrees with the fills: nothing filled before the book saw the order,
            # something filled and something left when partially filled, all of it when
            # filled (a quote-amount order is filled when its amount is spent).
            models.CheckConstraint(
                condition=Q(
                    status__in=[OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.UNTRIGGERED],
                    filled=0,
                )
                | (
                    Q(status=OrderStatus.PARTIALLY_FILLED, filled__gt=0)
                    & (Q(remaining__gt=0) | Q(quantity__isnull=True))
                )
                | (
                    Q(status=OrderStatus.FILLED, filled__gt=0)
                    & (Q(remaining=0) | Q(quantity__isnull=True))
                )
                | Q(status=OrderStatus.REJECTED, filled=0)
                | Q(status__in=[OrderStatus.CANCELLED, OrderStatus.EXPIRED]),
                name="order_status_matches_fills",
            ),
            # The matcher's time-priority stamp, from acceptance on. A rejected order
            # never took a place in the queue, so it has none.
            models.CheckConstraint(
                condition=Q(
                    status__in=[OrderStatus.PENDING, OrderStatus.REJECTED],
                    sequence__isnull=True,
                    accepted_at__isnull=True,
                )
                | (
                    ~Q(status__in=[OrderStatus.PENDING, OrderStatus.REJECTED])
                    & Q(sequence__isnull=False, sequence__gt=0, accepted_at__isnull=False)
                ),
                name="order_sequenced_once_accepted",
            ),
            models.CheckConstraint(
                condition=Q(status__in=TERMINAL_STATUSES, done_at__isnull=False)
                | (~Q(status__in=TERMINAL_STATUSES) & Q(done_at__isnull=True)),
                name="order_done_at_iff_terminal",
            ),
            models.CheckConstraint(
                condition=~Q(status=OrderStatus.REJECTED) | ~Q(reason=""),
                name="order_rejection_has_reason",
            ),
            models.CheckConstraint(condition=Q(nonce__gte=0), name="order_nonce_non_negative"),
            models.CheckConstraint(
                condition=Q(order_hash__regex=_HEX_REGEX)
                & models.lookups.Exact(Length("order_hash"), len("0x") + 64),
                name="order_hash_format",
            ),
            models.CheckConstraint(
                condition=Q(signature__regex=_HEX_REGEX)
                & models.lookups.Exact(Length("signature"), len("0x") + 130),
                name="order_signature_format",
            ),
        ]
        indexes = [
            # The matcher rebuilds a book from these rows in price-time priority.
            models.Index(
                fields=["market", "side", "price", "sequence"],
                condition=Q(status__in=LIVE_STATUSES),
                name="order_live_book_idx",
            ),
            models.Index(fields=["account", "-created_at"], name="order_account_recent_idx"),
            # Surveillance windows and order reports read orders by when they were
            # placed. Rows arrive in that order, so a BRIN index (a summary per range
            # of pages, nothing per row) finds a window at almost no cost to the
            # order path's inserts and updates.
            BrinIndex(fields=["created_at"], name="order_created_brin"),
            models.Index(
                fields=["expires_at"],
                condition=Q(expires_at__isnull=False, status__in=LIVE_STATUSES),
                name="order_gtt_expiry_idx",
            ),
        ]
        triggers = [
            updated_at_stamp(),
            status_machine(field="status", transitions=ORDER_STATUS_TRANSITIONS),
            created_as_trigger("PENDING", "orders"),
            # A finished order is history: its terms, fills and time priority stay as
            # they ended (archiving moves it whole, by DELETE).
            finished_read_only(*TERMINAL_STATUSES, noun="order"),
            # What order_references_check and the trade and ledger triggers keep on
            # inserts, kept on a TRUNCATE: history may only name an order kept here or
            # in the archive.
            truncate_keeps_references(*ORDER_REFERENCES, archive="exchange_orderarchive"),
            pgtrigger.Trigger(
                name="on_market_grid",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert
                | pgtrigger.UpdateOf("price", "stop_price", "quantity", "display_quantity"),
                declare=[("m_tick", "NUMERIC"), ("m_lot", "NUMERIC")],
                func=_ORDER_INSERT_CHECK,
            ),
            pgtrigger.Trigger(
                name="history_on_insert",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                func=_STATUS_HISTORY_INSERT.format(from_status="NULL"),
            ),
            # Once per statement, not per row: the matcher moves hundreds of orders in
            # one UPDATE, and one INSERT ... SELECT records all their changes.
            pgtrigger.Trigger(
                name="history_on_status_change",
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                operation=pgtrigger.Update,
                referencing=pgtrigger.Referencing(old="old_orders", new="new_orders"),
                func=_STATUS_HISTORY_INSERT_CHANGED,
            ),
            pgtrigger.ReadOnly(
                name="identity_read_only",
                fields=[
                    "id",
                    "account",
                    "market",
                    "client_order_id",
                    "side",
                    "type",
                    "time_in_force",
                    "post_only",
                    "self_trade_prevention",
                    "stop_price",
                    "protection_price",
                    "maker_fee_rate",
                    "taker_fee_rate",
                    "quote_quantity",
                    "nonce",
                    "signature",
                    "order_hash",
                    "expires_at",
                    "created_at",
                ],
            ),
            # Orders are never deleted; archiving moves one (``OrderArchive``) only
            # after the archive holds its final state (every column equal), in the
            # same transaction, and only once nothing is held for it.
            pgtrigger.Trigger(
                name="delete_only_archived",
                when=pgtrigger.Before,
                operation=pgtrigger.Delete,
                func=_ORDER_DELETE_CHECK,
            ),
            # The nonce, order hash and client order id stay unique across the live
            # table and the archive: an archived order's signature cannot be replayed
            # and its client order id cannot name a second order. AFTER, so that the
            # lookup runs once the live table's unique indexes have waited for any
            # concurrent archiving of a conflicting order to commit.
            pgtrigger.Trigger(
                name="unique_with_archive",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                func=_ORDER_UNIQUE_WITH_ARCHIVE,
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.type} {self.market_id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class OrderStatusHistory(models.Model):
    """Every status an order has had, written by a trigger on ``Order`` (so no code path
    can change a status without leaving a row here). Append-only."""

    # Indexed by orderstatushistory_order_idx (order, id). No foreign key constraint:
    # see ``order_references_check``.
    order = models.ForeignKey(
        Order,
        on_delete=models.DO_NOTHING,
        related_name="status_history",
        db_index=False,
        db_constraint=False,
    )
    # NULL, not "", on the row that records the order's creation: it had no status.
    from_status = models.CharField(  # noqa: DJ001
        max_length=16, choices=OrderStatus.choices, null=True
    )
    to_status = models.CharField(max_length=16, choices=OrderStatus.choices)
    filled = AmountField()
    remaining = AmountField(null=True)
    sequence = models.BigIntegerField(null=True)
    reason = models.CharField(max_length=64, blank=True)
    changed_at = models.DateTimeField()

    class Meta:
        # By the id, not the order: ordering by a relation joins the order's table, and
        # an archived order is no longer there.
        ordering = ["order_id", "id"]
        verbose_name_plural = "order status history"
        indexes = [models.Index(fields=["order", "id"], name="orderstatushistory_order_idx")]
        triggers = [
            *append_only_triggers(),
            order_references_check("order_id"),
            truncate_keeps_history(
                "EXISTS (SELECT 1 FROM exchange_order)"
                " OR EXISTS (SELECT 1 FROM exchange_orderarchive)",
                "the orders whose history it holds remain",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.order_id}: {self.from_status or '∅'} → {self.to_status}"


class OrderCommand(FastLoad, models.Model):
    """The matcher's inbound journal. The web tier inserts a command in the same
    transaction as the order (or cancel, amend…); the matcher applies pending commands
    in ``id`` order and marks them DONE in the transaction that persists the result.

    ``sequence`` is the position at which the matcher applied the command: a per-market
    gap-free count that *is* time priority.
    """

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="commands")
    kind = models.CharField(max_length=12, choices=CommandKind.choices)
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, null=True, blank=True, related_name="commands"
    )
    # No foreign key constraint: see ``order_references_check``.
    order = models.ForeignKey(
        Order,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="commands",
        db_constraint=False,
    )
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=8, choices=CommandStatus.choices, default=CommandStatus.PENDING
    )
    sequence = models.BigIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = CreatedAtField()
    processed_at = models.DateTimeField(null=True, blank=True)
    # The X-Request-ID of the request that wrote the command (dex.logging): the matcher
    # names it in its log lines, so one grep follows an order from the API to its reply.
    # NULL for a command no request wrote (a staff action, a task), as the CHECK says.
    request_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    kind__in=[CommandKind.PLACE, CommandKind.CANCEL, CommandKind.AMEND],
                    order__isnull=False,
                    account__isnull=False,
                )
                | Q(kind=CommandKind.CANCEL_ALL, order__isnull=True)
                | Q(
                    kind__in=[CommandKind.HALT, CommandKind.RESUME, CommandKind.SET_RULES],
                    order__isnull=True,
                    account__isnull=True,
                ),
                name="ordercommand_targets_match_kind",
            ),
            models.CheckConstraint(
                condition=Q(
                    status=CommandStatus.PENDING,
                    processed_at__isnull=True,
                    sequence__isnull=True,
                    result__isnull=True,
                )
                | Q(status=CommandStatus.DONE, processed_at__isnull=False, sequence__gt=0),
                name="ordercommand_done_is_processed",
            ),
            models.UniqueConstraint(
                fields=["market", "sequence"],
                condition=Q(sequence__isnull=False),
                name="ordercommand_unique_sequence",
            ),
            models.CheckConstraint(
                condition=Q(request_id__regex=r"^[A-Za-z0-9._-]{1,64}$")
                | Q(request_id__isnull=True),
                name="ordercommand_request_id_well_formed",
            ),
            # A signed amend's nonce is used once per account: a change its wallet
            # signed cannot be replayed (see exchange.signing).
            models.UniqueConstraint(
                F("account"),
                KeyTextTransform("nonce", "payload"),
                condition=Q(kind=CommandKind.AMEND, payload__has_key="nonce"),
                name="ordercommand_unique_amend_nonce",
            ),
        ]
        indexes = [
            # The matcher's "what is left to do" query: pending rows only, in id order,
            # by two indexes. Keyed by market first, a market's query reads only its
            # own entries (a quiet market's, none; the matcher asks for every market it
            # owns on every round). Keyed by id first, its heap order is the primary
            # key's and each row's market is checked in the index, so it costs less
            # than walking the primary key and filtering whatever the statistics say:
            # with only the first, statistics taken while a backlog was pending
            # (autovacuum not yet round) made the planner walk the whole journal by
            # primary key for every batch once the backlog was done (130 ms a batch
            # on a million commands).
            models.Index(
                fields=["market", "id"],
                condition=Q(status=CommandStatus.PENDING),
                name="ordercommand_pending_idx",
            ),
            models.Index(
                fields=["id", "market"],
                condition=Q(status=CommandStatus.PENDING),
                name="ordercommand_pending_by_id",
            ),
        ]
        triggers = [
            created_as_trigger("PENDING", "commands"),
            status_machine(
                field="status", transitions=[(CommandStatus.PENDING, CommandStatus.DONE)]
            ),
            # Wakes the matcher as the writing transaction commits (NOTIFY is
            # transactional: a rolled-back command wakes nobody). The matcher also polls,
            # so a lost notification only delays.
            pgtrigger.Trigger(
                name="notify_matcher",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                func=(f"PERFORM pg_notify('{MATCHER_CHANNEL}', NEW.market_id::text); RETURN NULL;"),
            ),
            pgtrigger.ReadOnly(
                name="command_read_only",
                exclude=["status", "sequence", "result", "processed_at"],
            ),
            # The matcher marks a command done once, with its place in the journal (time
            # priority) and its result; from then on it is history.
            finished_read_only(CommandStatus.DONE, noun="command"),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
            order_references_check("order_id"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"


# --------------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------------

# Once per INSERT statement over all its trades (the matcher writes a batch's in one):
# one pass, each trade's two orders by primary key.
# Also the rule of the foreign keys to both orders (see ``order_references_check``): a
# trade whose order is not in ``exchange_order`` finds no row to join and is refused.
_TRADE_PARTIES_CHECK = """
    SELECT t.id,
           m.market_id IS NULL OR k.market_id IS NULL,
           m.market_id <> t.market_id OR k.market_id <> t.market_id,
           k.side <> t.aggressor_side OR m.side = k.side
      INTO bad, missing, other_market, sides
      FROM new_trades t
      LEFT JOIN LATERAL (SELECT market_id, account_id, side FROM exchange_order
                          WHERE id = t.maker_order_id) m ON true
      LEFT JOIN LATERAL (SELECT market_id, account_id, side FROM exchange_order
                          WHERE id = t.taker_order_id) k ON true
     WHERE m.market_id IS NULL OR k.market_id IS NULL
        OR m.market_id <> t.market_id OR k.market_id <> t.market_id
        OR k.side <> t.aggressor_side OR m.side = k.side
        OR (t.aggressor_side = 'BUY'
            AND (t.buyer_id <> k.account_id OR t.seller_id <> m.account_id))
        OR (t.aggressor_side = 'SELL'
            AND (t.seller_id <> k.account_id OR t.buyer_id <> m.account_id))
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF missing THEN
        RAISE EXCEPTION 'trade % names an order that is not in exchange_order', bad
            USING ERRCODE = 'foreign_key_violation';
    ELSIF other_market THEN
        RAISE EXCEPTION 'trade % joins orders from another market', bad
            USING ERRCODE = 'check_violation';
    ELSIF sides THEN
        RAISE EXCEPTION 'trade % sides disagree with its orders', bad
            USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'trade % buyer/seller disagree with its orders'' accounts', bad
        USING ERRCODE = 'check_violation';
"""


class Trade(FastLoad, models.Model):
    """One fill between a resting (maker) and an incoming (taker) order, at the maker's
    price. Immutable once written, apart from its settlement columns. Fees are charged
    in the quote asset; a negative maker fee is a rebate."""

    # Every foreign key leads one of the indexes in Meta, which serve its lookups: the
    # foreign keys' own indexes would only slow the matcher's inserts.
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, related_name="trades", db_index=False
    )
    sequence = models.BigIntegerField(help_text="Per-market trade number, gap-free.")
    # The orders' foreign key rule is ``order_references_check``'s, not a constraint's.
    maker_order = models.ForeignKey(
        Order,
        on_delete=models.DO_NOTHING,
        related_name="maker_trades",
        db_index=False,
        db_constraint=False,
    )
    taker_order = models.ForeignKey(
        Order,
        on_delete=models.DO_NOTHING,
        related_name="taker_trades",
        db_index=False,
        db_constraint=False,
    )
    buyer = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="buys", db_index=False
    )
    seller = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="sells", db_index=False
    )
    aggressor_side = models.CharField(max_length=4, choices=Side.choices)
    price = PriceField()
    quantity = AmountField()
    quote_quantity = AmountField(help_text="price × quantity, exact.")
    maker_fee = AmountField()
    taker_fee = AmountField()
    # Each order's remaining quantity after this fill ("leaves"); NULL for an order
    # sized by quote amount. With these a fill settles from the database alone.
    maker_remaining = AmountField(null=True, blank=True)
    taker_remaining = AmountField(null=True, blank=True)
    settlement_status = models.CharField(
        max_length=8, choices=SettlementStatus.choices, default=SettlementStatus.PENDING
    )
    settled_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-executed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["market", "sequence"], name="trade_unique_sequence"),
            models.CheckConstraint(
                condition=Q(price__gt=0, quantity__gt=0, sequence__gt=0),
                name="trade_price_quantity_positive",
            ),
            models.CheckConstraint(
                condition=Q(quote_quantity=F("price") * F("quantity")),
                name="trade_quote_quantity_exact",
            ),
            # Self-trade prevention, enforced where no code path can skip it.
            models.CheckConstraint(condition=~Q(buyer=F("seller")), name="trade_no_self_trade"),
            models.CheckConstraint(
                condition=~Q(maker_order=F("taker_order")), name="trade_distinct_orders"
            ),
            models.CheckConstraint(
                condition=Q(taker_fee__gte=0, maker_fee__gte=-F("taker_fee")),
                name="trade_fees_never_net_negative",
            ),
            models.CheckConstraint(
                condition=(Q(maker_remaining__isnull=True) | Q(maker_remaining__gte=0))
                & (Q(taker_remaining__isnull=True) | Q(taker_remaining__gte=0)),
                name="trade_remaining_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(settlement_status=SettlementStatus.SETTLED, settled_at__isnull=False)
                | (~Q(settlement_status=SettlementStatus.SETTLED) & Q(settled_at__isnull=True)),
                name="trade_settled_at_iff_settled",
            ),
        ]
        indexes = [
            models.Index(fields=["market", "-executed_at"], name="trade_market_time_idx"),
            models.Index(fields=["maker_order"], name="trade_maker_order_idx"),
            models.Index(fields=["taker_order"], name="trade_taker_order_idx"),
            models.Index(fields=["buyer", "-executed_at"], name="trade_buyer_time_idx"),
            models.Index(fields=["seller", "-executed_at"], name="trade_seller_time_idx"),
            models.Index(
                fields=["id"],
                condition=~Q(settlement_status=SettlementStatus.SETTLED),
                name="trade_unsettled_idx",
            ),
        ]
        triggers = [
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
            truncate_keeps_references("portfolio_ledgertransaction.trade_id"),
            # An order's fills are its trades.
            truncate_keeps_history(
                "EXISTS (SELECT 1 FROM exchange_order WHERE filled > 0)"
                " OR EXISTS (SELECT 1 FROM exchange_orderarchive WHERE filled > 0)",
                "orders that were filled remain",
            ),
            pgtrigger.ReadOnly(name="append_only", exclude=["settlement_status", "settled_at"]),
            pgtrigger.FSM(
                name="settlement_transitions",
                field="settlement_status",
                transitions=[
                    (SettlementStatus.PENDING, SettlementStatus.SETTLING),
                    (SettlementStatus.PENDING, SettlementStatus.SETTLED),
                    (SettlementStatus.SETTLING, SettlementStatus.SETTLED),
                    (SettlementStatus.SETTLING, SettlementStatus.FAILED),
                    (SettlementStatus.FAILED, SettlementStatus.SETTLING),
                ],
            ),
            pgtrigger.Trigger(
                name="parties_match_orders",
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                referencing=pgtrigger.Referencing(new="new_trades"),
                declare=[
                    ("bad", "BIGINT"),
                    ("missing", "BOOLEAN"),
                    ("other_market", "BOOLEAN"),
                    ("sides", "BOOLEAN"),
                ],
                func=_TRADE_PARTIES_CHECK,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.market_id}#{self.sequence} {self.quantity}@{self.price}"


# --------------------------------------------------------------------------------------
# Market data
# --------------------------------------------------------------------------------------


class OrderBookSnapshot(models.Model):
    """A periodic picture of a market: top of book, depth and 24 h statistics."""

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="snapshots")
    sequence = models.BigIntegerField(help_text="Book sequence number the snapshot reflects.")
    best_bid = PriceField(null=True, blank=True)
    best_ask = PriceField(null=True, blank=True)
    spread = PriceField(null=True, blank=True)
    bids = models.JSONField(default=list, help_text="[[price, quantity], …] best first.")
    asks = models.JSONField(default=list, help_text="[[price, quantity], …] best first.")
    last_price = PriceField(null=True, blank=True)
    open_24h = PriceField(null=True, blank=True)
    high_24h = PriceField(null=True, blank=True)
    low_24h = PriceField(null=True, blank=True)
    volume_24h = AmountField(default=0)
    quote_volume_24h = AmountField(default=0)
    trade_count_24h = models.PositiveIntegerField(default=0)
    taken_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-taken_at"]
        get_latest_by = "taken_at"
        constraints = [
            models.CheckConstraint(
                condition=Q(best_bid__isnull=True)
                | Q(best_ask__isnull=True)
                | Q(best_bid__lt=F("best_ask")),
                name="orderbooksnapshot_not_crossed",
            ),
            models.CheckConstraint(
                condition=Q(
                    best_bid__isnull=False,
                    best_ask__isnull=False,
                    spread__isnull=False,
                    spread=F("best_ask") - F("best_bid"),
                )
                | ((Q(best_bid__isnull=True) | Q(best_ask__isnull=True)) & Q(spread__isnull=True)),
                name="orderbooksnapshot_spread",
            ),
            models.CheckConstraint(
                condition=Q(volume_24h__gte=0, quote_volume_24h__gte=0, sequence__gte=0),
                name="orderbooksnapshot_volumes_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(high_24h__isnull=True)
                | Q(low_24h__isnull=True)
                | Q(high_24h__gte=F("low_24h")),
                name="orderbooksnapshot_high_above_low",
            ),
            # The periodic task stamps ``taken_at`` with the start of its period, so a
            # retried or repeated run of the same period writes nothing. Its index also
            # serves the latest-first reads (a B-tree is read backwards as well).
            models.UniqueConstraint(fields=["market", "taken_at"], name="obsnapshot_unique_period"),
        ]
        triggers = [pgtrigger.Protect(name="protect_update", operation=pgtrigger.Update)]

    def __str__(self) -> str:
        return f"{self.market_id} @ {self.taken_at:%Y-%m-%d %H:%M:%S}"


class CandleInterval(models.TextChoices):
    M1 = "1m"
    M5 = "5m"
    H1 = "1h"
    D1 = "1d"


class Candle(models.Model):
    """OHLCV of one market over one interval bucket (aligned on the Unix epoch, so a day
    starts at 00:00 UTC), rolled up from the trades by a periodic task.

    The trades are the record; a candle is derived from them and re-derived the same
    way every time, so the roll-up upserts and a bucket is only rewritten when a trade
    it had not seen yet has arrived.
    """

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="candles")
    interval = models.CharField(max_length=3, choices=CandleInterval.choices)
    open_time = models.DateTimeField()
    close_time = models.DateTimeField()
    open = PriceField()
    high = PriceField()
    low = PriceField()
    close = PriceField()
    volume = AmountField()
    quote_volume = AmountField()
    trade_count = models.PositiveIntegerField()
    first_sequence = models.BigIntegerField(help_text="The bucket's first trade.")
    last_sequence = models.BigIntegerField(help_text="The bucket's last trade.")
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["market", "interval", "-open_time"]
        constraints = [
            # Serves the (market, interval, time range) reads too.
            models.UniqueConstraint(
                fields=["market", "interval", "open_time"], name="candle_unique_bucket"
            ),
            models.CheckConstraint(
                condition=Q(close_time__gt=F("open_time")), name="candle_close_after_open"
            ),
            models.CheckConstraint(
                condition=Q(low__gt=0, high__gte=F("low"))
                & Q(open__gte=F("low"), open__lte=F("high"))
                & Q(close__gte=F("low"), close__lte=F("high")),
                name="candle_prices_within_range",
            ),
            models.CheckConstraint(
                condition=Q(volume__gt=0, quote_volume__gt=0, trade_count__gt=0)
                & Q(last_sequence__gte=F("first_sequence")),
                name="candle_has_trades",
            ),
        ]
        triggers = [
            updated_at_trigger(),
            pgtrigger.ReadOnly(
                name="bucket_read_only", fields=["market", "interval", "open_time", "close_time"]
            ),
        ]

    def __str__(self) -> str:
        return f"{self.market_id} {self.interval} @ {self.open_time:%Y-%m-%d %H:%M}"


class OrderArchive(models.Model):
    """An order that finished long ago, moved out of ``exchange_order`` by the archiving
    task (``exchange.services.archiving``), with every column as it was.

    The live table then holds only recent and open orders, which the order path, the
    matcher's rebuild and the trader API read. History stays whole: trades, the command
    journal, status history and the ledger keep naming the order by id, and the
    database guarantees that id resolves in one table or the other (see
    ``order_references_check``). An order leaves the live table only once its final
    state is here (``delete_only_archived``), and nothing is ever deleted or changed
    here. An archived order's nonce, order hash and client order id stay taken
    (``unique_with_archive`` on the live table, the unique constraints below here).

    Same columns as ``Order`` (checked by a test), its id as ``order_id``, plus when it
    was archived.
    """

    order_id = models.BigIntegerField(primary_key=True)
    account_id = models.BigIntegerField()
    market_id = models.BigIntegerField()
    client_order_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=20, choices=OrderType.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices)
    post_only = models.BooleanField()
    self_trade_prevention = models.CharField(max_length=12, choices=SelfTradePrevention.choices)
    price = PriceField(null=True)
    stop_price = PriceField(null=True)
    quantity = AmountField(null=True)
    quote_quantity = AmountField(null=True)
    display_quantity = AmountField(null=True)
    protection_price = PriceField(null=True)
    maker_fee_rate = RateField()
    taker_fee_rate = RateField()
    filled = AmountField()
    remaining = AmountField(null=True)
    filled_quote = AmountField()
    average_price = PriceField(null=True)
    status = models.CharField(max_length=16, choices=OrderStatus.choices)
    reason = models.CharField(max_length=64, blank=True)
    nonce = models.DecimalField(max_digits=78, decimal_places=0)
    signature = models.CharField(max_length=132)
    order_hash = HashField()
    expires_at = models.DateTimeField(null=True)
    sequence = models.BigIntegerField(null=True)
    metadata = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True)
    done_at = models.DateTimeField()
    archived_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-done_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=TERMINAL_STATUSES), name="orderarchive_terminal_only"
            ),
            models.UniqueConstraint(
                fields=["account_id", "nonce"], name="orderarchive_unique_nonce"
            ),
            models.UniqueConstraint(
                fields=["account_id", "client_order_id"],
                name="orderarchive_unique_client_order_id",
            ),
            models.UniqueConstraint(fields=["order_hash"], name="orderarchive_unique_hash"),
        ]
        indexes = [
            models.Index(fields=["account_id", "-created_at"], name="orderarchive_account_idx"),
            models.Index(fields=["done_at"], name="orderarchive_done_idx"),
            # A rebuilt book numbers new orders after every order of its market, the
            # archived ones included (MarketMatcher.rebuild).
            models.Index(
                fields=["market_id", "-sequence"],
                condition=Q(sequence__isnull=False),
                name="orderarchive_market_seq_idx",
            ),
        ]
        triggers = [
            *append_only_triggers(),
            # History may only name an order kept in the live table or here.
            truncate_keeps_references(*ORDER_REFERENCES, kept_in="exchange_order.id"),
        ]

    def __str__(self) -> str:
        return f"archived #{self.order_id} {self.status}"

    def as_order(self) -> Order:
        """The order as it was when it left the live table, for code that reads orders
        (the API's serializers, an idempotent retry's answer). Not for saving: it is
        no longer in ``exchange_order``, and never will be again."""
        values = {
            field.attname: getattr(self, "order_id" if field.attname == "id" else field.attname)
            for field in Order._meta.concrete_fields
        }
        order = Order(**values)
        order._state.adding = False
        order.archived_at = self.archived_at
        return order


# --------------------------------------------------------------------------------------
# WebSocket connections (monitoring)
# --------------------------------------------------------------------------------------


class WebSocketConnection(models.Model):
    """One WebSocket stream connection, for monitoring: who, from where, what it
    watched and how much it exchanged.

    Written when the connection opens and when it closes, and in between at most every
    ``WS_CONNECTION_FLUSH_SECONDS`` while something changed — never once per message. A
    row whose web process died keeps ``disconnected_at`` empty; ``last_seen_at`` says
    when it was last known alive.
    """

    connection_id = models.UUIDField(unique=True, editable=False)
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subscriptions = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    connected_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    disconnected_at = models.DateTimeField(null=True, blank=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)
    messages_sent = models.PositiveBigIntegerField(default=0)
    messages_received = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-connected_at"]
        verbose_name = "WebSocket connection"
        constraints = [
            models.CheckConstraint(
                condition=Q(last_seen_at__gte=F("connected_at")),
                name="wsconnection_seen_after_connected",
            ),
            models.CheckConstraint(
                condition=Q(disconnected_at__isnull=True)
                | Q(disconnected_at__gte=F("connected_at")),
                name="wsconnection_disconnected_after_connected",
            ),
        ]
        indexes = [
            models.Index(fields=["-connected_at"], name="wsconnection_connected_idx"),
            models.Index(fields=["account", "-connected_at"], name="wsconnection_account_idx"),
            models.Index(
                fields=["last_seen_at"],
                name="wsconnection_open_idx",
                condition=Q(disconnected_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return str(self.connection_id)
