from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web page: sign-in, exports, runs, backfills, logs and destination tests, served at `/`."""

    name = "batchexports.web"
    label = "web"
    default_auto_field = "django.db.models.BigAutoField"
