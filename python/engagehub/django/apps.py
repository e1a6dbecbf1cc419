"""The optional app: ``INSTALLED_APPS = [..., "engagehub.django"]`` and an
``ENGAGEHUB`` settings dict (see :mod:`engagehub.django.conf`)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    from . import conf

    if setting == conf.SETTING:
        conf.reset()  # rebuilt from the new value on next use (override_settings in tests)


class EngageHubConfig(AppConfig):
    """Reads and checks ``settings.ENGAGEHUB`` and builds the shared clients and
    readers (:func:`engagehub.django.shared_analytics` ...), without any network
    I/O: redis-py connects on the first command."""

    name = "engagehub.django"
    label = "engagehub"
    verbose_name = "engagehub"

    def ready(self) -> None:
        from . import conf

        conf.configure()
        setting_changed.connect(_settings_changed, dispatch_uid="engagehub.django.settings")
