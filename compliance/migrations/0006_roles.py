"""The staff roles (groups) and their permissions, as ``compliance.roles`` defines them.

The permissions are created first: on a fresh database Django would only create them
after the last migration, and the groups need them now.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

from compliance.roles import ROLES, roles_sync


def roles_create(apps, schema_editor):
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, apps=apps, verbosity=0)
    roles_sync(apps=apps)


def roles_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[r.name for r in ROLES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("compliance", "0005_kyc_funding_limits_change_history"),
        ("exchange", "0009_change_history_triggers"),
        ("portfolio", "0006_fee_tier_change_history_triggers"),
    ]

    operations = [migrations.RunPython(roles_create, roles_delete)]
