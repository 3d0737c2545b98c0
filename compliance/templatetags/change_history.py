"""``{% change_history object user as changes %}``: an object's change history for the
admin's history page, or None when ``user`` may not see it."""

from django import template

from compliance.admin.history import can_see_history, change_history_list

register = template.Library()


@register.simple_tag
def change_history(obj, user):
    if not can_see_history(user, type(obj)):
        return None
    return change_history_list(obj)
