"""ASGI entry point: `uvicorn batchexports.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchexports.settings")

application = get_asgi_application()
