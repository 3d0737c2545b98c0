"""Staff edits of reference data in the admin (assets, markets being listed, fee
tiers, withdrawal limits, an account's label, the compliance rules): each create,
change or delete writes one ``AuditEvent`` with the record's state before and after,
in its transaction.

These run inside the admin's own transaction (its add, change and delete views are
atomic), so they join it rather than insist on being the outermost one.
"""

from __future__ import annotations

from django.db import models, transaction

from compliance.services.audit import Actor, audit_record, model_state


def audited_fields(model: type[models.Model]) -> list[str]:
    """What an edit of ``model`` can change: its editable columns."""
    return [f.name for f in model._meta.concrete_fields if f.editable and not f.primary_key]


@transaction.atomic
def record_save(*, actor: Actor, record: models.Model, fields: list[str] | None = None):
    """Create ``record``, or save the changes made to it."""
    fields = fields or audited_fields(type(record))
    before = None
    if record.pk is not None and not record._state.adding:
        stored = type(record).objects.select_for_update().get(pk=record.pk)
        before = model_state(stored, fields)
    record.save()
    record.refresh_from_db()  # the stored values (decimals at their scale) for the record
    audit_record(
        actor=actor,
        action=f"{record._meta.model_name}.{'update' if before is not None else 'create'}",
        target=record,
        before=before,
        after=model_state(record, fields),
    )
    return record


@transaction.atomic
def record_delete(*, actor: Actor, record: models.Model, fields: list[str] | None = None) -> None:
    fields = fields or audited_fields(type(record))
    stored = type(record).objects.select_for_update().get(pk=record.pk)
    audit_record(
        actor=actor,
        action=f"{record._meta.model_name}.delete",
        target=stored,
        before=model_state(stored, fields),
    )
    stored.delete()
