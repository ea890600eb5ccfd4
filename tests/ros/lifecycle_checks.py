"""Checks shared by the lifecycle-node tests."""

from __future__ import annotations

from typing import Any

#: ``entities()`` of a node that holds nothing (unconfigured, or failed configure)
NONE = {"subscriptions": 0, "timers": 0, "publishers": 0, "threads": 0}


def assert_configure_fails(node: Any, *needles: str) -> None:
    """``node.trigger_configure()`` fails, leaves the node unconfigured with nothing
    created, and its ``last_error`` names every one of ``needles``."""
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node._state_machine.current_state[1] == "unconfigured"
    assert node.last_error is not None
    for needle in needles:
        assert needle in node.last_error, node.last_error
    assert node.entities() == NONE
