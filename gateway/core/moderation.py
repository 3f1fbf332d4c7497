"""Complaints, and what moderators may do: ban for a set time, unban, kick; each
audited."""

from __future__ import annotations

import logging

from gateway.core import events as ev
from gateway.core.addresses import address_group
from gateway.core.base import SessionBase
from gateway.core.names import (
    name_key,
)
from gateway.core.timefmt import ban_end, wait_for
from store.contract import (
    ComplaintStatus,
)

__all__ = ["Moderation"]

log = logging.getLogger("chat.session")


class Moderation(SessionBase):
    """/ban (a complaint, or a moderator's ban), /unban, /kick."""

    __slots__ = ()

    async def _moderator(self, what: str) -> bool:
        """Whether this user is a moderator; if not, say that `what` needs one."""
        if await self.core.store.is_moderator(self.key):
            return True
        self._error(ev.ErrorCode.REFUSED, f"only moderators can {what}")
        return False

    async def _ban(self, nick: str, duration: int | None = None) -> None:
        target = name_key(nick)
        if target == self.key:
            self._error(ev.ErrorCode.REFUSED, "you cannot complain about yourself")
            return
        store = self.core.store
        if duration is not None and not await self._moderator(
            "ban for a set time (/ban <nick> alone is a complaint)"
        ):
            return
        if duration is not None or await store.is_moderator(self.key):
            await self._mod_ban(nick, target, duration or self.core.settings.ban_duration)
            return
        address = address_group(self.sink.address)
        result = await store.complain(self.key, target, address)
        threshold = self.core.settings.ban_threshold
        if result.status in (ComplaintStatus.RECORDED, ComplaintStatus.BANNED):
            banned = result.status is ComplaintStatus.BANNED
            await self._audit(
                "complaint",
                result.name,
                count=f"{result.count}/{threshold}",
                **({"banned_until_ms": str(result.until_ms)} if banned else {}),
            )
        if result.status is ComplaintStatus.NO_USER:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
        elif result.status is ComplaintStatus.ALREADY_BANNED:
            self._error(
                ev.ErrorCode.REFUSED,
                f"{result.name} is already banned until {ban_end(result.until_ms)}",
            )
        elif result.status is ComplaintStatus.TOO_NEW:
            self._error(
                ev.ErrorCode.REFUSED,
                "your account is too new for complaints to count; "
                f"try again in {wait_for(result.wait_ms)}",
            )
        elif result.status is ComplaintStatus.RATE:
            self._error(
                ev.ErrorCode.RATE_LIMITED,
                f"too many complaints: at most {self.core.settings.complaints_per_hour} an "
                f"hour; try again in {wait_for(result.wait_ms)}",
            )
        elif result.status is ComplaintStatus.ADDRESS:
            self._error(
                ev.ErrorCode.REFUSED,
                f"a complaint about {result.name} from your address was already counted "
                f"({result.count}/{threshold})",
            )
        elif result.status is ComplaintStatus.AGAIN:
            self._error(
                ev.ErrorCode.REFUSED,
                f"you already complained about {result.name} ({result.count}/{threshold})",
            )
        else:
            until = result.until_ms if result.status is ComplaintStatus.BANNED else None
            self.sink.emit(ev.Complained(result.name, result.count, threshold, until))

    async def _mod_ban(self, nick: str, target: str, duration: int) -> None:
        """A moderator's ban: at once, for `duration` seconds, no complaints needed."""
        placed = await self.core.store.ban(target, duration)
        if placed is None:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
            return
        await self._audit("ban", placed.name, until_ms=str(placed.until_ms), seconds=str(duration))
        self.sink.emit(ev.BanPlaced(placed.name, placed.until_ms))

    async def _unban(self, nick: str) -> None:
        if not await self._moderator("unban"):
            return
        target = name_key(nick)
        account = await self.core.store.get_account(target)
        if account is None:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
            return
        was = await self.core.store.unban(target)
        if was:
            await self._audit("unban", account.name)
        self.sink.emit(ev.Unbanned(account.name, was))

    async def _kick(self, nick: str) -> None:
        if not await self._moderator("kick"):
            return
        target = name_key(nick)
        if target == self.key:
            self._error(ev.ErrorCode.REFUSED, "you cannot kick yourself (/quit)")
            return
        account = await self.core.store.get_account(target)
        if account is None:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
            return
        await self.core.store.kick(target)
        await self._audit("kick", account.name)
        self.sink.emit(ev.KickSent(account.name))
