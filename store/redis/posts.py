"""Posting: chat messages through the post batcher (one pipeline per loop turn), private
messages (one script on a standalone Redis, a few steps on a cluster), and what is
published but never stored (client tags, chat presence announcements)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from store import keys
from store.batcher import ChatTarget
from store.contract import (
    ACCEPTED,
    Change,
    Conv,
    Kind,
    PostResult,
    PostStatus,
    StoreNoReply,
    StoreUnavailable,
)
from store.payloads import message_record, payload, tags_record
from store.redis.errors import mapped
from store.redis.part import Part
from store.redis.replies import UNCONFIRMED, post_result
from store.resp import NotReplicated
from store.scripts import SCRIPTS

log = logging.getLogger("chat.store")


class Posts(Part):
    """Chat and private messages, tags and announcements."""

    def post_chat(
        self,
        user: str,
        name: str,
        chat: str,
        chat_name: str,
        texts: list[str],
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[list[PostResult]]:
        """Queue one user's chat messages for the next pipeline; one result per text."""
        target = ChatTarget(
            chat,
            (keys.stream(chat), keys.members(chat)),
            (
                chat_name,
                self.policy.ttl_ms,
                self.policy.rate,
                self.policy.burst,
                keys.chat_conv(chat),
                keys.chat_channel(chat),
                self.policy.max_stored,
                self.link.publish,
            ),
        )
        flag = "" if kind is Kind.MESSAGE else kind.value
        return self.link.batcher.chat(target, user, name, texts, post_result, flag, tags)

    def post_private(
        self,
        user: str,
        name: str,
        peer: str,
        text: str,
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[PostResult]:
        flag = "" if kind is Kind.MESSAGE else kind.value
        conv = keys.dm_conv(user, peer)
        args = [
            user,
            name,
            peer,
            text,
            self.policy.ttl_ms,
            self.policy.rate,
            self.policy.burst,
            conv,
            keys.user_channel(user),
            keys.user_channel(peer),
            self.policy.max_stored,
        ]
        if self.link.cluster:
            return asyncio.ensure_future(
                self._post_private_cluster(user, name, peer, text, args, flag, tags)
            )
        raw = self.link.batcher.call(
            SCRIPTS["post_private"],
            [
                keys.conv_stream(conv),
                *keys.sender_keys(user),
                keys.user(peer),
                keys.user_peers(user),
                keys.user_peers(peer),
            ],
            [*args, "", flag, tags],
        )
        return mapped(
            raw, lambda r: post_result(r[0], r[1] if len(r) > 1 else ""), lambda: UNCONFIRMED
        )

    async def _post_private_cluster(
        self, user: str, name: str, peer: str, text: str, args: list[Any], kind: str, tags: str
    ) -> PostResult:
        """A private message on a cluster: the recipient (its slot) and the sender's ban
        and rate (`post_gate.lua`, the sender's slot) first; then both users' peers
        (their slots) beside the stream write (the conversation's slot), so a stored
        message is always one the recipient's next login reads; then the publish to both
        users' channels. A gateway that dies before the publish leaves the message stored
        and unread: the recipient gets it at the next login, not live."""
        recipient, gate = await asyncio.gather(
            self.link.call(self.redis.hget(keys.user(peer), "name")),
            self.link.eval(
                "post_gate",
                list(keys.sender_keys(user)),
                [self.policy.rate, self.policy.burst, 1],
            ),
        )
        if not recipient:
            return PostResult(PostStatus.NO_USER)
        if gate[0] != "ok":
            return post_result(gate[0], gate[1])
        conv = keys.dm_conv(user, peer)
        pipe = self.link.pipe()
        for a, b in ((user, peer), (peer, user)):
            pipe.sadd(keys.user_peers(a), b)
            pipe.pexpire(keys.user_peers(a), self.policy.ttl_ms)
        _, reply = await asyncio.gather(
            self.link.call(pipe.execute()),
            self.link.script_waited(
                "post_private", [keys.conv_stream(conv)], [*args, recipient, kind, tags]
            ),
        )
        result = ACCEPTED
        if isinstance(reply, NotReplicated):  # stored, not yet on a replica: still shown
            reply, result = reply.reply, UNCONFIRMED
        elif isinstance(reply, StoreNoReply):  # unknown: the next login shows it if stored
            return UNCONFIRMED
        status, mid = reply
        if status != "ok":
            return post_result(status, mid)
        record = payload([message_record(mid, conv, name, recipient, text, kind or "M", tags)])
        pipe = self.link.pipe()
        for a in (user, peer):
            pipe.execute_command("SPUBLISH", keys.user_channel(a), record)
        try:
            await self.link.call(pipe.execute())
        except StoreUnavailable as exc:  # stored and listed: shown at the next login
            log.warning("event=private_publish_failed conv=%s error=%s", conv, exc)
        return result

    async def send_tags(self, user: str, name: str, conv: Conv, where: str, tags: str) -> str:
        """One PUBLISH per channel (the sender's ban, rate and membership are the caller's:
        its session knows them); the id is this gateway's, unique enough to pair an echo
        with its copies, never a stored position."""
        ms = int(time.time() * 1000)
        tid = f"{ms}-t{secrets.token_hex(6)}"
        record = payload([tags_record(tid, ms, str(conv), name, where, tags)])
        if conv.is_chat:
            channels = [keys.chat_channel(conv.chat)]
        else:
            channels = [keys.user_channel(u) for u in sorted({conv.low, conv.high})]
        pipe = self.link.pipe()
        for channel in channels:
            self._publish_on(pipe, channel, record)
        await self.link.call(pipe.execute())
        return tid

    async def announce(
        self,
        chats: Sequence[str],
        user: str,
        name: str,
        change: Change,
        reason: str,
        stamp: int,
        max_members: int,
    ) -> None:
        """announce.lua per chat (each in its chat's slot), all in one pipeline."""
        told = (change.value, user, name, stamp, reason)
        calls = [
            self.link.batcher.call(
                SCRIPTS["announce"],
                [keys.members(chat)],
                [max_members, keys.chat_channel(chat), self.link.publish, *told],
            )
            for chat in chats
        ]
        if calls:
            await asyncio.gather(*calls)
