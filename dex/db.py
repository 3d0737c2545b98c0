"""Column types and triggers shared by every app.

Precision follows the platform's conventions: prices NUMERIC(20,8), amounts
NUMERIC(30,8), addresses VARCHAR(42), hashes VARCHAR(66), timestamps timestamptz.
"""

from decimal import Decimal

import pgtrigger
from django.db import IntegrityError, models, transaction
from django.db.models import signals
from django.db.models.base import ModelState
from django.db.models.expressions import DatabaseDefault
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.functions import Now
from django.db.models.query_utils import DeferredAttribute

PRICE_DIGITS, PRICE_PLACES = 20, 8
AMOUNT_DIGITS, AMOUNT_PLACES = 30, 8
# Fee rates are fractions of notional: 0.001 is 10 bps.
RATE_DIGITS, RATE_PLACES = 10, 8

ADDRESS_REGEX = r"^0x[0-9a-f]{40}$"
HASH_REGEX = r"^0x[0-9a-f]{64}$"
SIGNATURE_REGEX = r"^0x[0-9a-f]{130}$"

ZERO = Decimal(0)


# Setting either on a new instance only stores the value in its __dict__.
_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


class FastLoad:
    """Mixed into a model (before ``models.Model``): rows read from the database become
    instances without ``Model.__init__``. The loaded values go straight into the
    instance's ``__dict__``, where ``__init__`` would ``setattr`` each one through a
    descriptor that, for these models, only stores it there; a deferred field is left
    out, as ``__init__`` leaves it. The matcher builds thousands of orders and commands
    a batch, and ``__init__`` was a tenth of its drain time.

    Only for a model whose concrete fields all use Django's plain descriptors and that
    no ``pre_init``/``post_init`` receiver watches: ``fast_load_unsafe`` names what
    breaks that, and a test holds every model using it to it."""

    @classmethod
    def from_db(cls, db, field_names, values):
        new = cls.__new__(cls)
        new.__dict__.update(zip(field_names, values, strict=True))
        state = new._state = ModelState()
        state.adding = False
        state.db = db
        return new


def fast_load_unsafe(model: type[models.Model]) -> list[str]:
    """Why ``FastLoad.from_db`` would not build what ``Model.__init__`` builds for
    ``model`` (nothing when it would)."""
    problems = [
        f"{signal} receivers"
        for signal in ("pre_init", "post_init")
        if getattr(signals, signal).has_listeners(model)
    ]
    for field in model._meta.concrete_fields:
        descriptor = type(model.__dict__.get(field.attname))
        if descriptor not in _PLAIN_DESCRIPTORS:
            problems.append(f"{field.attname}: {descriptor.__name__}")
    return problems


class ModelRows:
    """A model's columns for a SELECT written by hand, and its instances built from the
    result rows as a queryset builds them: ``from_db`` with the loaded fields' names,
    each value through the converters Django would apply (a JSON field's decoding ...).

    For queries run on every matcher batch and every order placement: compiling such a
    queryset cost more than running it (a batch of one command compiled five, ~5 ms of
    Python, against ~1 ms in PostgreSQL). ``alias`` is the table's name in the SQL;
    ``defer`` leaves fields out, as ``QuerySet.defer`` does (they load on first use)."""

    def __init__(self, model: type[models.Model], alias: str, *, defer: tuple[str, ...] = ()):
        fields = [
            f for f in model._meta.concrete_fields if f.name not in defer and f.attname not in defer
        ]
        unknown = set(defer) - {n for f in model._meta.concrete_fields for n in (f.name, f.attname)}
        if unknown:
            raise ValueError(f"{model.__name__} has no fields {sorted(unknown)}")
        self.model = model
        self.alias = alias
        self.fields = fields
        self.attnames = tuple(f.attname for f in fields)
        self.width = len(fields)
        self.columns = ", ".join(f'{alias}."{f.column}"' for f in fields)
        self._converters: list[tuple[int, list, models.expressions.Col]] | None = None
        self._inserts: dict[tuple[str, ...], str] = {}  # INSERT statements by columns named

    def converters(self, connection) -> list[tuple[int, list, models.expressions.Col]]:
        if self._converters is None:
            found = []
            for index, field in enumerate(self.fields):
                column = field.get_col(self.alias)
                functions = column.get_db_converters(connection)
                if functions:
                    found.append((index, functions, column))
            self._converters = found
        return self._converters

    def build(self, row, connection, start: int = 0) -> models.Model:
        """The instance in ``row[start:start + width]``."""
        values = list(row[start : start + self.width])
        for index, functions, column in self.converters(connection):
            for function in functions:
                values[index] = function(values[index], column, connection)
        return self.model.from_db(connection.alias, self.attnames, values)

    def fetch_all(
        self, connection, sql: str, params, *, related: tuple[tuple[str, "ModelRows"], ...] = ()
    ) -> list[models.Model]:
        """The instances ``sql`` selects. ``related``: the relations each row also
        carries, in the order their columns follow this model's, each as (field name,
        its rows); they are cached on the instance as ``select_related`` caches them
        (None where a LEFT JOIN found no row)."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        joined = self._joined(related)
        return [self._with_related(row, connection, joined) for row in rows]

    def fetch_one(
        self, connection, sql: str, params, *, related: tuple[tuple[str, "ModelRows"], ...] = ()
    ) -> models.Model | None:
        """The instance in the first row ``sql`` selects, or None; ``related`` as for
        ``fetch_all``."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        return self._with_related(row, connection, self._joined(related))

    def _joined(self, related) -> list[tuple[models.Field, "ModelRows", int, int]]:
        """Each relation's field, rows, first column and primary-key column in a row."""
        joined, start = [], self.width
        for name, rows in related:
            pk = start + rows.attnames.index(rows.model._meta.pk.attname)
            joined.append((self.model._meta.get_field(name), rows, start, pk))
            start += rows.width
        return joined

    def _with_related(self, row, connection, joined) -> models.Model:
        instance = self.build(row, connection)
        for field, rows, start, pk in joined:
            found = None if row[pk] is None else rows.build(row, connection, start)
            field.set_cached_value(instance, found)
        return instance

    def insert(self, instance: models.Model, connection) -> models.Model:
        """INSERT the new ``instance`` and return the row as stored (its id, the
        database's defaults, whatever the table's triggers set), built as ``build``
        builds it, with the relations ``instance`` had cached. What ``Model.save``
        does for a new row of a model without save signals: each value through its
        field's ``pre_save`` and ``get_db_prep_save``; a field left to its database
        default is not named. Needs every column loaded (no ``defer``)."""
        model = self.model
        if len(self.fields) != len(model._meta.concrete_fields):
            raise TypeError(f"{model.__name__} rows with deferred fields cannot insert")
        if signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model):
            raise TypeError(f"{model.__name__} has save signal receivers: use save()")
        if instance.pk is not None:
            raise ValueError(f"{model.__name__} {instance.pk} is not a new row")
        fields, values = [], []
        for field in self.fields:
            if field.primary_key and field.db_returning:
                continue  # the database's sequence gives it
            value = field.pre_save(instance, True)
            if isinstance(value, DatabaseDefault):
                continue
            fields.append(field)
            values.append(field.get_db_prep_save(value, connection))
        names = tuple(f.column for f in fields)
        sql = self._inserts.get(names)
        if sql is None:
            columns = ", ".join(f'"{name}"' for name in names)
            placeholders = ", ".join(["%s"] * len(names))
            sql = self._inserts[names] = (
                f"INSERT INTO {model._meta.db_table} AS {self.alias} ({columns})"
                f" VALUES ({placeholders}) RETURNING {self.columns}"
            )
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
            row = cursor.fetchone()
        stored = self.build(row, connection)
        stored._state.fields_cache.update(instance._state.fields_cache)
        return stored


def PriceField(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, **kwargs)


def AmountField(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, **kwargs)


def RateField(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=RATE_DIGITS, decimal_places=RATE_PLACES, **kwargs)


def AddressField(**kwargs) -> models.CharField:
    """An EVM address, stored lower-case (``0x`` + 40 hex) so equality is exact."""
    return models.CharField(max_length=42, **kwargs)


def HashField(**kwargs) -> models.CharField:
    return models.CharField(max_length=66, **kwargs)


def violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint PostgreSQL says ``exc`` broke, if it names one."""
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)


def insert_unless_taken(instance: models.Model, *, constraint: str) -> bool:
    """Insert ``instance`` (in a savepoint) and return True; or return False, writing
    nothing, when the unique ``constraint`` already holds its row: one a concurrent
    writer committed after the caller looked (a redelivered task, say)."""
    try:
        with transaction.atomic():
            instance.save(force_insert=True)
    except IntegrityError as exc:
        if violated_constraint(exc) != constraint:
            raise
        return False
    return True


def CreatedAtField() -> models.DateTimeField:
    return models.DateTimeField(db_default=Now(), editable=False)


def UpdatedAtField() -> models.DateTimeField:
    """Maintained by :func:`updated_at_trigger`, never by Python."""
    return models.DateTimeField(db_default=Now(), editable=False)


def updated_at_trigger(column: str = "updated_at") -> pgtrigger.Trigger:
    """Stamp ``updated_at`` on every UPDATE, whoever issues it (ORM, raw SQL, psql)."""
    return pgtrigger.Trigger(
        name="set_updated_at",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        func=f"NEW.{column} := now(); RETURN NEW;",
    )


def created_as_trigger(status: str, noun: str) -> pgtrigger.Trigger:
    """Rows of this table are inserted in ``status`` and reach every other state only
    through their state machine (a pgtrigger FSM on updates)."""
    return pgtrigger.Trigger(
        name="created_pending",
        when=pgtrigger.Before,
        operation=pgtrigger.Insert,
        condition=pgtrigger.Condition(f"NEW.status <> '{status}'"),
        func=(
            f"RAISE EXCEPTION '{noun} are created {status}, not %', NEW.status "
            "USING ERRCODE = 'check_violation'; RETURN NULL;"
        ),
    )


def truncate_keeps_references(
    *columns: str, archive: str | None = None, kept_in: str | None = None
) -> pgtrigger.Trigger:
    """Refuse a TRUNCATE of this table while rows of other tables still name its rows:
    the rule a foreign key constraint keeps, for references checked by triggers instead
    (a TRUNCATE fires no row trigger). ``columns``: each reference, as "table.column".
    ``archive``: a table whose ``order_id`` may hold the named row instead; ``kept_in``:
    another "table.column" that may hold it instead. The check runs after the whole
    statement, so a TRUNCATE that empties the referencing tables too (a test database's
    flush) passes, as it would past a constraint."""
    dangling = []
    for reference in columns:
        table, column = reference.split(".")
        where = f"{column} IS NOT NULL"
        if archive:
            where += (
                f" AND NOT EXISTS (SELECT 1 FROM {archive} a WHERE a.order_id = {table}.{column})"
            )
        if kept_in:
            holder, key = kept_in.split(".")
            where += f" AND NOT EXISTS (SELECT 1 FROM {holder} k WHERE k.{key} = {table}.{column})"
        dangling.append(f"EXISTS (SELECT 1 FROM {table} WHERE {where})")
    return pgtrigger.Trigger(
        name="truncate_keeps_references",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Truncate,
        func=(
            f"IF {' OR '.join(dangling)} THEN "
            'RAISE EXCEPTION \'cannot truncate table "%": rows of other tables name its '
            "rows', TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation'; "
            "END IF; RETURN NULL;"
        ),
    )


def truncate_keeps_history(condition: str, reason: str) -> pgtrigger.Trigger:
    """Refuse a TRUNCATE of this append-only table while what its rows are the history
    of is still there: ``condition``, SQL true after the statement in that case;
    ``reason`` says what remains (no quotes). A flush that empties those tables in the
    same statement passes."""
    return pgtrigger.Trigger(
        name="truncate_keeps_history",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Truncate,
        func=(
            f"IF {condition} THEN "
            f"RAISE EXCEPTION 'cannot truncate table \"%\": {reason}', TG_TABLE_NAME "
            "USING ERRCODE = 'restrict_violation'; END IF; RETURN NULL;"
        ),
    )


# Planner settings for a trigger function whose queries join its statement's transition
# table with tables that only grow (orders, ledger transactions). PL/pgSQL plans each
# query at the function's first call in a session and keeps the plan until the next
# ANALYZE of those tables. Planned while they were small (a new venue, a matcher's first
# batch, a pooled web connection opened early) a hash join over a sequential scan looked
# cheapest and stayed: every later call read the whole table, and each order placed on
# that connection cost more than the last. With these the joins probe the tables'
# primary keys whatever their size at planning, so a call costs what its own rows cost.
# Only for functions that join no two transition tables or CTEs with each other (those
# need a hash join). A migration sets them (ALTER FUNCTION ... SET, as portfolio/0011
# does); CREATE OR REPLACE FUNCTION, as pgtrigger installs a changed trigger, drops
# them, so a changed trigger's migration sets them again
# (tests/dex/test_trigger_planning.py fails until it does).
PLANNED_BY_INDEX = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")


def append_only_triggers(*, allow_update: bool = False) -> list[pgtrigger.Trigger]:
    """Rows that record history are never deleted (and, unless allowed, never changed)."""
    triggers = [pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete)]
    if not allow_update:
        triggers.append(pgtrigger.Protect(name="protect_update", operation=pgtrigger.Update))
    return triggers
