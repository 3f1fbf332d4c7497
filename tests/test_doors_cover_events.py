"""Every core event has a rendering in every door: adding an event without one fails
here, not in front of a user. A door that shows nothing for an event says so explicitly
(an entry that renders to b""), so a missing one is a KeyError, never a silent drop."""

from __future__ import annotations

import typing

from gateway.core import events as ev
from gateway.doors.line import render
from gateway.doors.web import protocol


def test_every_event_is_rendered_by_every_door() -> None:
    kinds = set(typing.get_args(ev.Event))
    assert len(kinds) > 15
    line = set(render._RENDER)
    web = set(protocol._FRAMES) | {ev.Messages}
    assert kinds - line == set(), "line door lacks a rendering"
    assert kinds - web == set(), "web door lacks a frame"
