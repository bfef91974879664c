"""Scorer weights are versioned: every write is kept, and an earlier version can be rolled back."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from routing.models import ScorerWeights, ScorerWeightsVersion
from routing.policy import scorer_weights_rollback, scorer_weights_write

pytestmark = pytest.mark.django_db(transaction=True)


def test_writes_make_versions_and_a_rollback_restores_the_old_weights() -> None:
    first = scorer_weights_write(
        weights={"bias": 1.0, "min_logprob": 0.5},
        fitted_on="run 1",
        calibration={"after": {"brier": 0.2}},
    )
    second = scorer_weights_write(weights={"bias": -3.0}, fitted_on="run 2")
    live = ScorerWeights.objects.get(name="default")
    assert (first.number, second.number) == (1, 2)
    assert live.weights == {"bias": -3.0} and live.version == 2
    back = scorer_weights_rollback(number=1)
    live.refresh_from_db()
    assert back.number == 3 and live.version == 3
    assert live.weights == {"bias": 1.0, "min_logprob": 0.5}
    assert back.calibration == {"after": {"brier": 0.2}} and "v1" in back.fitted_on
    # The history keeps every version, the bad one included.
    assert list(ScorerWeightsVersion.objects.values_list("number", flat=True)) == [3, 2, 1]
    with pytest.raises(ValueError, match="no version 9"):
        scorer_weights_rollback(number=9)


def test_concurrent_writers_never_share_a_version_number() -> None:
    scorer_weights_write(weights={"bias": 0.0}, fitted_on="seed")
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            scorer_weights_write(weights={"bias": float(n)}, fitted_on=f"writer {n}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    numbers = sorted(ScorerWeightsVersion.objects.values_list("number", flat=True))
    assert numbers == list(range(1, 8))
    assert ScorerWeights.objects.get().version == 7
