"""Enumerations and reason codes shared by the engine and its callers.

Names mirror the platform's database enums so the matcher can store them as is.
"""

from enum import StrEnum


class _FastStrEnum(StrEnum):
    # Enum.__hash__ is written in Python; members equal their string values, so the string
    # hash is both correct and C-speed for the dict and set look-ups on the hot path.
    __hash__ = str.__hash__


class Side(_FastStrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(_FastStrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_LIMIT = "STOP_LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"


class TimeInForce(_FastStrEnum):
    GTC = "GTC"
    GTT = "GTT"
    IOC = "IOC"
    FOK = "FOK"


class SelfTradePrevention(_FastStrEnum):
    EXPIRE_TAKER = "EXPIRE_TAKER"
    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"
    DECREMENT = "DECREMENT"


class OrderStatus(_FastStrEnum):
    """The platform's order statuses; the engine's events map onto them (see README)."""

    PENDING = "PENDING"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNTRIGGERED = "UNTRIGGERED"


class Reason(_FastStrEnum):
    """Stable UPPER_SNAKE codes carried by Rejected and Cancelled events."""

    # Rejections: the command changed nothing.
    MARKET_HALTED = "MARKET_HALTED"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_ORDER_TYPE = "INVALID_ORDER_TYPE"
    INVALID_STP_MODE = "INVALID_STP_MODE"
    INVALID_TIME_IN_FORCE = "INVALID_TIME_IN_FORCE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    QUANTITY_OFF_LOT = "QUANTITY_OFF_LOT"
    INVALID_QUOTE_AMOUNT = "INVALID_QUOTE_AMOUNT"
    QUOTE_AMOUNT_NOT_ALLOWED = "QUOTE_AMOUNT_NOT_ALLOWED"
    MISSING_PRICE = "MISSING_PRICE"
    INVALID_PRICE = "INVALID_PRICE"
    PRICE_OFF_TICK = "PRICE_OFF_TICK"
    MARKET_ORDER_WITH_PRICE = "MARKET_ORDER_WITH_PRICE"
    MISSING_STOP_PRICE = "MISSING_STOP_PRICE"
    INVALID_STOP_PRICE = "INVALID_STOP_PRICE"
    STOP_PRICE_NOT_ALLOWED = "STOP_PRICE_NOT_ALLOWED"
    MISSING_EXPIRE_TIME = "MISSING_EXPIRE_TIME"
    INVALID_EXPIRE_TIME = "INVALID_EXPIRE_TIME"
    EXPIRE_TIME_NOT_ALLOWED = "EXPIRE_TIME_NOT_ALLOWED"
    ALREADY_EXPIRED = "ALREADY_EXPIRED"
    INVALID_DISPLAY_QUANTITY = "INVALID_DISPLAY_QUANTITY"
    POST_ONLY_NOT_ALLOWED = "POST_ONLY_NOT_ALLOWED"
    POST_ONLY_WOULD_TAKE = "POST_ONLY_WOULD_TAKE"
    NOT_AMENDABLE = "NOT_AMENDABLE"
    NOTHING_TO_AMEND = "NOTHING_TO_AMEND"
    # Cancellations: an accepted order ended with quantity left.
    USER_REQUEST = "USER_REQUEST"
    CANCEL_ALL = "CANCEL_ALL"
    IOC_UNFILLED = "IOC_UNFILLED"
    FOK_NOT_FILLABLE = "FOK_NOT_FILLABLE"
    NO_LIQUIDITY = "NO_LIQUIDITY"
    PRICE_BAND = "PRICE_BAND"
    QUOTE_EXHAUSTED = "QUOTE_EXHAUSTED"
    SELF_TRADE = "SELF_TRADE"
