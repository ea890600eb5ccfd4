"""ROS test fixtures: one ROS_DOMAIN_ID per test, an rclpy context that is always shut down."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")

# Domains 0..101 are safe with Fast DDS' default port mapping. Start from the process id so
# two test runs on one machine do not share a domain, and step per test so tests within a
# run never hear each other.
_DOMAINS = itertools.count((os.getpid() % 40) * 2 + 10)


@pytest.fixture
def domain_id() -> int:
    return next(_DOMAINS) % 100 + 1


@pytest.fixture
def ros_context(domain_id: int) -> Iterator[Any]:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    try:
        yield context
    finally:
        context.try_shutdown()
