from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "batchexports.accounts"
    label = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from batchexports.accounts import redaction

        redaction.install()
