"""The emulator's delay line, driven with invented times (no namespaces, no sockets)."""

import random

import pytest

from whalescale.bench.linkemu import DelayLine, EmuParams


def line(**params: float) -> DelayLine:
    return DelayLine(EmuParams(**params), random.Random(1))


def test_a_frame_leaves_exactly_delay_after_it_came() -> None:
    d = line(delay_ms=20)
    d.arrive(1.0, b"a")
    assert d.next_departure() == pytest.approx(1.020)
    assert d.due(1.019) == []
    assert d.due(1.020) == [b"a"]
    assert d.next_departure() is None


def test_jitter_varies_the_delay_but_never_the_order() -> None:
    d = line(delay_ms=10, jitter_ms=5)
    for i in range(1000):
        d.arrive(i * 0.0001, i.to_bytes(2, "big"))
    departures = []
    while (t := d.next_departure()) is not None:
        departures.append(t)
        d.due(t)
    assert departures == sorted(departures)
    delays = [t - i * 0.0001 for i, t in enumerate(departures)]
    assert min(delays) >= 0.005 - 1e-9
    assert max(delays) - min(delays) > 0.004


def test_loss_drops_about_its_share_and_counts_it() -> None:
    d = line(loss=0.1)
    for i in range(10_000):
        d.arrive(0.0, bytes([i % 256]))
    assert 900 < d.stats.lost < 1100
    assert len(d.due(0.0)) == 10_000 - d.stats.lost


def test_a_link_set_down_loses_what_it_carried_and_what_comes() -> None:
    d = line(delay_ms=50)
    d.arrive(0.0, b"in flight")
    d.set_down(True)
    d.arrive(0.01, b"after")
    assert d.due(1.0) == []
    assert d.stats.down_drops == 2
    d.set_down(False)
    d.arrive(2.0, b"back")
    assert d.due(2.05) == [b"back"]


@pytest.mark.parametrize("bad", [{"delay_ms": -1}, {"jitter_ms": -1}, {"loss": 1.5}])
def test_impossible_parameters_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EmuParams(**bad)
