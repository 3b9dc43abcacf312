"""inboxbot: notifications for inboxes that cannot push by themselves."""

__version__ = "0.1.0"
