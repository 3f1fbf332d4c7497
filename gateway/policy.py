"""What the store is told, from the settings: one place for the gateway and the admin
tool (which would otherwise import the whole gateway to open a store)."""

from __future__ import annotations

from gateway.settings import Settings
from store.redis.policy import StorePolicy

__all__ = ["store_policy"]


def store_policy(settings: Settings, gateway_id: str) -> StorePolicy:
    """What the store is told, from the settings (the gateway's and the admin tool's)."""
    return StorePolicy(
        message_ttl=settings.message_ttl,
        ban_threshold=settings.ban_threshold,
        ban_duration=settings.ban_duration,
        rate=settings.rate,
        burst=settings.burst,
        gateway_id=gateway_id,
        complaint_min_age=settings.complaint_min_age,
        complaints_per_hour=settings.complaints_per_hour,
        complaints_per_address=settings.complaints_per_address,
        ban_address_memory=settings.ban_address_memory,
        reply_timeout=settings.store_timeout,
        max_stored=settings.max_stored,
        max_user_chats=settings.max_user_chats,
        max_chats=settings.max_chats,
        chat_creations=settings.chat_creations,
        max_registrations=settings.max_registrations,
        account_ttl=settings.account_ttl,
        wait_replica_ms=settings.redis_wait_replica,
    )
