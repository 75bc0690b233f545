import pytest

from whalescale.session.replay import WINDOW_SIZE, ReplayWindow
from whalescale.session.timers import REJECT_AFTER_MESSAGES

# (counter, accepted) applied in order to one window, as in wireguard-go's replay_test.go
CASES = [
    (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
    (WINDOW_SIZE + 5, True), (5, False), (6, True), (WINDOW_SIZE + 4, True),
    (WINDOW_SIZE + 4, False), (3 * WINDOW_SIZE, True), (WINDOW_SIZE + 6, False),
    (2 * WINDOW_SIZE + 1, True), (2 * WINDOW_SIZE, False), (REJECT_AFTER_MESSAGES, False),
    (REJECT_AFTER_MESSAGES - 1, True), (REJECT_AFTER_MESSAGES - 1, False),
]


def test_replay_table():
    window = ReplayWindow()
    for i, (counter, expected) in enumerate(CASES):
        assert window.accept(counter) is expected, f"case {i}: counter {counter}"


@pytest.mark.parametrize("gap", [1, 2, 63, 64, 65, WINDOW_SIZE - 1, WINDOW_SIZE])
def test_every_counter_once_out_of_order(gap):
    window = ReplayWindow()
    order = [c for base in range(0, 4 * gap, gap) for c in range(base + gap - 1, base - 1, -1)]
    assert all(window.accept(c) for c in order)
    assert not any(window.accept(c) for c in order[-min(gap, 10):])
