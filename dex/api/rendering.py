"""Read-only serializers that build their fields once.

DRF builds a serializer's fields anew for every instance: a ``ModelSerializer`` maps
each model field to a serializer field, then deep-copies them, before it renders
anything (most of a millisecond for an order on a 2-core machine). A serializer that only
renders needs none of that per call. ``RenderOnce`` builds the fields once per class,
on a template instance, and renders with them the way ``Serializer.to_representation``
does: same fields, same order, same values. Rendering reads nothing from the serializer
instance (no context, no request), so the template's fields serve every thread.

For output only: validating input still goes through the instance's own fields. Not for
a serializer with method fields (``SerializerMethodField`` calls the serializer it is
bound to, which would be the template): it is refused.
"""

from __future__ import annotations

import threading

from rest_framework.fields import SerializerMethodField, SkipField
from rest_framework.relations import PKOnlyObject

_building = threading.Lock()


class RenderOnce:
    """Mixin for a read-only ``Serializer``: ``to_representation`` with fields built once
    per class."""

    def to_representation(self, instance):
        cls = type(self)
        fields = cls.__dict__.get("_render_fields")
        if fields is None:
            with _building:
                fields = cls.__dict__.get("_render_fields")
                if fields is None:
                    template = cls()
                    fields = tuple(template._readable_fields)
                    bound = [f.field_name for f in fields if isinstance(f, SerializerMethodField)]
                    if bound:  # they call the template's methods, not this instance's
                        raise TypeError(f"{cls.__name__}: method fields {bound} cannot render once")
                    cls._render_fields = fields
        ret = {}
        for field in fields:
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            check = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            ret[field.field_name] = None if check is None else field.to_representation(attribute)
        return ret
