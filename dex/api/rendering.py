"""Serializers that build their fields once per class.

DRF builds a serializer's fields anew for every instance: a ``ModelSerializer`` maps
each model field to a serializer field, then deep-copies them, before it renders or
validates anything (most of a millisecond to render an order on a 2-core machine, about
0.3 ms to parse one: ``bench/request_path.py``). Rendering and parsing read nothing from the
serializer instance (no context, no request), so fields built once, on a template
instance, serve every instance and every thread:

- ``RenderOnce`` renders with them the way ``Serializer.to_representation`` does: same
  fields, same order, same values. Not for a serializer with method fields
  (``SerializerMethodField`` calls the serializer it is bound to, which would be the
  template): it is refused.
- ``ParseOnce`` gives each instance those fields as its ``fields`` (DRF's cached
  property, read by all of its validation, which is unchanged): same checks, same
  messages. Only for fields that read neither the context nor a parent: nested
  serializers and hidden fields (whose defaults take the context) are refused. A
  ``partial`` instance builds its own (a field asks its root whether it is partial).
"""

from __future__ import annotations

import threading

from rest_framework.fields import HiddenField, SerializerMethodField, SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.serializers import BaseSerializer, Serializer

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


class ParseOnce:
    """Mixin for an input ``Serializer``: its ``fields`` built once per class."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.partial:
            # ``fields`` is a cached property: what the instance holds is what it uses.
            self.__dict__["fields"] = type(self)._fields_once()

    @classmethod
    def _fields_once(cls):
        fields = cls.__dict__.get("_parse_fields")
        if fields is None:
            with _building:
                fields = cls.__dict__.get("_parse_fields")
                if fields is None:
                    template = cls.__new__(cls)
                    Serializer.__init__(template)  # not partial; its own fields
                    fields = template.fields
                    bound = [
                        name
                        for name, field in fields.items()
                        if isinstance(field, BaseSerializer | HiddenField)
                    ]
                    if bound:  # they would read the template's context and data
                        raise TypeError(f"{cls.__name__}: fields {bound} cannot parse once")
                    cls._parse_fields = fields
        return fields
