from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _roles_sync(sender, **kwargs) -> None:
    from compliance.roles import roles_sync

    roles_sync()


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance"

    def ready(self) -> None:
        # After every migrate (once this app's permissions exist, the last app's to be
        # created), the staff roles get exactly the permissions compliance.roles gives
        # them, new models' included.
        post_migrate.connect(_roles_sync, sender=self, dispatch_uid="compliance.roles_sync")
