"""Fixtures for the `relay cost` tests; helpers are in cost_helpers.py."""

from __future__ import annotations

import pytest

from relay.cost import Prices, default_prices


@pytest.fixture(scope="session")
def prices() -> Prices:
    return default_prices()
