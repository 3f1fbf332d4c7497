"""Conversations: reading them (a login's backlog, what a reconnect missed, history,
CHATHISTORY ranges, read positions), names of users, read cursors, and joining and
leaving chats."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from store import keys
from store.contract import (
    Backlog,
    Conv,
    JoinStatus,
    Membership,
    Message,
    Position,
    Range,
    UserState,
)
from store.payloads import joined_record, left_record
from store.redis.part import Part
from store.redis.policy import BACKLOG_GROUP
from store.redis.replies import low_bound, position_of, stream_messages
from store.scripts import SCRIPTS

log = logging.getLogger("chat.store")

#: Looks checked for a dead chat at each chat creation (`_prune_looks`).
PRUNE_LOOKS = 3


class Conversations(Part):
    """Reading conversations, cursors, and chat membership."""

    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog:
        """The newest `limit` messages of the user's conversations after their cursors,
        oldest first, and how many older unread ones each conversation left out.

        Each conversation is read newest first with COUNT limit + 1, BACKLOG_GROUP
        conversations at a time, keeping only the newest `limit` overall: memory stays
        bounded whatever was missed."""
        convs = [Conv.of_chat(c) for c in state.chats]
        convs += [Conv.private(user, p) for p in state.peers]
        floor = self._floor()
        kept: list[Message] = []
        cut: dict[Conv, int] = {}
        for at in range(0, len(convs), BACKLOG_GROUP):
            group = convs[at : at + BACKLOG_GROUP]
            commands: list[tuple[Any, ...]] = []
            for conv in group:
                low = low_bound(floor, state.cursors.get(conv))
                commands.append(("XREVRANGE", keys.conv_stream(conv), "+", low, "COUNT", limit + 1))
            results = await self.link.run(commands)
            for conv, entries in zip(group, results, strict=False):
                if len(entries) > limit:  # one more than shown exists: say so
                    cut[conv] = len(entries) - limit
                    entries = entries[:limit]
                kept += stream_messages(conv, entries)
            kept.sort(key=lambda m: m.pos)
            if len(kept) > limit:
                for m in kept[: len(kept) - limit]:
                    cut[m.conv] = cut.get(m.conv, 0) + 1
                kept = kept[len(kept) - limit :]
        return Backlog(kept, cut)

    async def read_after(self, after: Mapping[Conv, Position | None]) -> list[Message]:
        if not after:
            return []
        floor = self._floor()
        convs = list(after)
        commands: list[tuple[Any, ...]] = [
            ("XRANGE", keys.conv_stream(conv), low_bound(floor, after[conv]), "+") for conv in convs
        ]
        results = await self.link.run(commands)
        out = [
            m
            for conv, entries in zip(convs, results, strict=False)
            for m in stream_messages(conv, entries)
        ]
        out.sort(key=lambda m: m.pos)
        return out

    async def history(self, chat: str, name: str, count: int) -> list[Message]:
        (entries,) = await self.link.run(
            [("XREVRANGE", keys.stream(chat), "+", self._min_id(), "COUNT", count)]
        )
        entries.reverse()
        return stream_messages(Conv.of_chat(chat), entries, name)

    async def read_range(self, conv: Conv, want: Range) -> list[Message]:
        """One single-key read: XRANGE for the oldest of the range, XREVRANGE for the
        newest; an `after` older than the lifetime reads from the oldest live message.
        With the loop turn's other commands: every web and IRC login reads a range, and
        redis-py's pool (64 connections) made a storm of them wait and fail."""
        stream = keys.conv_stream(conv)
        low = low_bound(self._floor(), want.after)
        high = "+" if want.before is None else "(" + keys.stream_id(want.before)
        if want.newest:
            (entries,) = await self.link.run(
                [("XREVRANGE", stream, high, low, "COUNT", want.count)]
            )
            entries.reverse()
        else:
            (entries,) = await self.link.run([("XRANGE", stream, low, high, "COUNT", want.count)])
        return stream_messages(conv, entries)

    async def latest_many(self, convs: Sequence[Conv]) -> list[Message | None]:
        """The newest live message of each conversation, one pipeline for all of them
        (CHATHISTORY TARGETS: one read per conversation would queue every other store
        call behind thousands of round trips)."""
        if not convs:
            return []
        floor = self._min_id()
        results = await self.link.run(
            [("XREVRANGE", keys.conv_stream(c), "+", floor, "COUNT", 1) for c in convs]
        )
        out: list[Message | None] = []
        for c, entries in zip(convs, results, strict=True):
            found = stream_messages(c, entries)
            out.append(found[0] if found else None)
        return out

    async def read_position(self, user: str, conv: Conv) -> Position | None:
        """The user's stored read position (last shown) in one conversation."""
        (mid,) = await self.link.run([("HGET", keys.cursors(user), keys.conv_id(conv))])
        return position_of(mid)

    async def names(self, users: Sequence[str]) -> list[str | None]:
        """One HGET per account, all in one pipeline with the rest of the loop turn."""
        if not users:
            return []
        replies = await self.link.run([("HGET", keys.user(u), "name") for u in users])
        return [str(n) if n else None for n in replies]

    async def advance_cursors(self, updates: Mapping[str, Mapping[Conv, Position]]) -> None:
        """Flush shown positions in one round trip (advance.lua never moves one back)."""
        if not updates:
            return
        sha = SCRIPTS["advance"].sha
        commands: list[tuple[Any, ...]] = []
        for user, convs in updates.items():
            args: list[Any] = [self.policy.ttl_ms]
            for conv, pos in convs.items():
                args += [keys.conv_id(conv), keys.stream_id(pos)]
            commands.append(("EVALSHA", sha, 1, keys.cursors(user), *args))
        await self.link.run(commands)

    async def join(
        self, user: str, chat: str, typed: str, origin: str, look: str = ""
    ) -> Membership:
        """Read the user's and the global limits and, for a chat to be created, the live
        chat that has the name's look; add the member in the chat's slot, then record
        the chat in the user's chats, the chat list and the looks, and tell the user's
        gateways. Two joins racing past the first read (the same user on two devices, or
        chats created at once) can each pass: a limit may be exceeded by the number of
        joins in flight at that instant, never more, and two look-alike chats created at
        the same instant can both exist."""
        pipe = self.link.pipe()
        pipe.sismember(keys.user_chats(user), chat)
        pipe.scard(keys.user_chats(user))
        pipe.get(keys.creations(user))
        pipe.zcard(keys.chat_sizes())
        pipe.hget(keys.chat_looks(), look)
        pipe.exists(keys.members(chat))
        listed, mine, made, existing, holder, alive = await self.link.call(pipe.execute())
        if look and not alive and holder is not None and holder != chat:  # would create
            alike = await self._live_name(holder)
            if alike is not None:
                return Membership(False, alike, JoinStatus.LOOK_ALIKE)
        may_join = 1 if listed or int(mine) < self.policy.max_user_chats else 0
        if int(existing) >= self.policy.max_chats:
            may_create = JoinStatus.CHAT_LIMIT.value
        elif int(made or 0) >= self.policy.chat_creations:
            may_create = JoinStatus.CREATE_RATE.value
        else:
            may_create = "ok"
        status, name, count = await self.link.eval(
            "join", [keys.chat(chat), keys.members(chat)], [user, typed, may_join, may_create]
        )
        if status not in ("joined", "created", "already"):
            return Membership(False, typed, JoinStatus(status))
        pipe = self.link.pipe()
        pipe.sadd(keys.user_chats(user), chat)
        if look and status == "created":
            pipe.hset(keys.chat_looks(), look, chat)
        if status != "already":
            if status == "created":
                pipe.incr(keys.creations(user))
                pipe.expire(keys.creations(user), 3600, nx=True)
            pipe.zadd(keys.chat_sizes(), {chat: int(count)})
            self._publish_on(pipe, keys.user_channel(user), joined_record(chat, name, origin))
        await self.link.call(pipe.execute())
        if look and status == "created":
            try:
                await self._prune_looks()
            except Exception as e:  # housekeeping: the join itself is done
                log.warning("event=looks_not_pruned error=%s", str(e).replace(" ", "_")[:120])
        return Membership(status != "already", name)

    async def _prune_looks(self) -> None:
        """Forget the looks of a few chats that have emptied, picked at random: each
        creation adds one look and takes up to PRUNE_LOOKS dead ones away, so the hash
        stays near the number of live chats (plus the looks no creation drew yet)."""
        (picked,) = await self.link.run(
            [("HRANDFIELD", keys.chat_looks(), PRUNE_LOOKS, "WITHVALUES")]
        )
        if not picked:
            return  # (the embedded store answers None for no hash, and pairs as lists)
        if isinstance(picked[0], list):
            pairs = [(look, chat) for look, chat in picked]
        else:
            pairs = list(zip(picked[::2], picked[1::2], strict=True))
        sizes = await self.link.run([("ZSCORE", keys.chat_sizes(), c) for _, c in pairs])
        dead = [look for (look, _), size in zip(pairs, sizes, strict=True) if size is None]
        if dead:
            await self.link.run([("HDEL", keys.chat_looks(), *dead)])

    async def _live_name(self, chat: str) -> str | None:
        """The display name of `chat` while it has members; None once it has emptied."""
        (size, name) = await self.link.run(
            [("ZSCORE", keys.chat_sizes(), chat), ("HGET", keys.chat(chat), "name")]
        )
        return None if size is None else str(name or chat)

    async def leave(self, user: str, chat: str, origin: str) -> Membership:
        """Remove the member in the chat's slot, then from the user's chats and the chat
        list (a chat left empty is deleted), and tell the user's gateways."""
        removed, name, left = await self.link.eval(
            "leave", [keys.chat(chat), keys.members(chat)], [user, chat]
        )
        pipe = self.link.pipe()
        pipe.srem(keys.user_chats(user), chat)
        if removed:
            if int(left) == 0:
                pipe.zrem(keys.chat_sizes(), chat)
            else:
                pipe.zadd(keys.chat_sizes(), {chat: int(left)})
            self._publish_on(pipe, keys.user_channel(user), left_record(chat, name, origin))
        await self.link.call(pipe.execute())
        return Membership(bool(removed), name)

    async def is_member(self, user: str, chat: str) -> bool:
        return bool(await self.link.call(self.redis.sismember(keys.members(chat), user)))
