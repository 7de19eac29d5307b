"""OpenAPI description of the destination: a union of one schema per type, discriminated by `type`."""

from __future__ import annotations

from functools import cache

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from batchexports.destinations import registry


@cache
def destination_union() -> PolymorphicProxySerializer:
    variants: dict[str, serializers.Serializer | type[serializers.Serializer]] = {}
    for spec in registry.all_specs():
        fields = {
            "type": serializers.ChoiceField(choices=[spec.type]),
            "config": spec.config_serializer(),
            "integration": serializers.IntegerField(required=False, allow_null=True),
        }
        variants[spec.type] = type(f"{spec.type}DestinationSerializer", (serializers.Serializer,), fields)
    return PolymorphicProxySerializer(
        component_name="BatchExportDestination",
        serializers=variants,
        resource_type_field_name="type",
    )


class PersonalAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "batchexports.accounts.authentication.PersonalAPIKeyAuthentication"
    name = "PersonalAPIKeyAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A personal API key: phx_…"}
