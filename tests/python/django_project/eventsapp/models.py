"""The reference guide's event log (``core.models.DiscordEventLog``), reduced to its
fields the guide's flush callback fills."""

from django.db import models


class DiscordEventLog(models.Model):
    event_type = models.CharField(max_length=32)
    user_id = models.CharField(max_length=32)
    channel_id = models.CharField(max_length=32)
    message_id = models.CharField(max_length=32, blank=True, default="")
    timestamp = models.DateTimeField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["channel_id", "timestamp"])]


class Reaction(models.Model):
    """A model without the guide's field names: needs a ``build`` hook."""

    emoji = models.CharField(max_length=32)
    by = models.CharField(max_length=32)
    at = models.IntegerField()
