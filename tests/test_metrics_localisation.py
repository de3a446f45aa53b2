"""Localisation metrics: pointing game, energy pointing game, grid pointing game on hand-made masks and
attributions with known answers, against Quantus' definitions, and on the shapes generators."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.localisation import (energy_pointing_game, grid_pointing_game, grid_pointing_game_all_targets,
                                          pointing_game, quadrant_shares, channel_maps, target_quadrants)


def hot(position, shape=(6, 6), value=1.0, channels=1) -> np.ndarray:
    """[1, C, H, W] zeros with ``value`` at ``position`` in every channel."""
    a = np.zeros((1, channels, *shape))
    a[(0, slice(None), *position)] = value
    return a


def box(rows, cols, shape=(6, 6)) -> np.ndarray:
    """[1, H, W] bool mask of the rectangle rows x cols."""
    m = np.zeros((1, *shape), bool)
    m[0, rows, cols] = True
    return m


MASK = box(slice(1, 4), slice(2, 5))   # rows 1..3, columns 2..4


# -- channel rule ------------------------------------------------------------------------------------------
def test_channels_are_summed_and_single_maps_pass_through():
    a = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(channel_maps(a), a.sum(axis=1))
    np.testing.assert_array_equal(channel_maps(a[:, :1]), a[:, 0])
    np.testing.assert_array_equal(channel_maps(a[:, 0]), a[:, 0])
    with pytest.raises(HarnessError, match="attributions"):
        channel_maps(a[0, 0])


# -- pointing game -----------------------------------------------------------------------------------------
def test_a_single_hot_pixel_hits_inside_and_misses_outside():
    assert pointing_game(hot((2, 3)), MASK).tolist() == [1.0]
    assert pointing_game(hot((5, 0)), MASK).tolist() == [0.0]
    # a negative peak is not the maximum: the 35 zeros are, 8 of them on the mask, so Quantus' "any" tie
    # rule counts a hit and the share rule gives 8/35
    assert pointing_game(hot((2, 3), value=-1.0), MASK).tolist() == [1.0]
    np.testing.assert_allclose(pointing_game(hot((2, 3), value=-1.0), MASK, ties="share"), [8 / 35])


def test_the_channel_sum_decides_where_the_maximum_is():
    a = np.zeros((1, 3, 6, 6))
    a[0, 0, 2, 3] = 5.0      # channel 0 peaks inside the mask ...
    a[0, 1, 2, 3] = -4.0     # ... but the channel sum there is 1
    a[0, 2, 5, 5] = 2.0      # and 2 outside
    assert pointing_game(a, MASK).tolist() == [0.0]


@pytest.mark.parametrize("position, tolerance, expected", [
    ((5, 3), 0, 0.0),        # two rows below the mask (its last row is 3)
    ((5, 3), 1, 0.0),
    ((5, 3), 2, 1.0),        # distance exactly 2: counted
    ((4, 5), 1, 0.0),        # diagonal neighbour of the corner (3, 4): distance sqrt(2)
    ((4, 5), 1.5, 1.0),
    ((2, 3), 0, 1.0),
])
def test_tolerance_is_a_euclidean_distance_to_the_mask(position, tolerance, expected):
    assert pointing_game(hot(position), MASK, tolerance=tolerance).tolist() == [expected]


def test_ties_follow_quantus_any_rule_or_the_expected_share():
    a = hot((2, 3)) + hot((5, 5))          # two maxima, one inside
    assert pointing_game(a, MASK).tolist() == [1.0]
    assert pointing_game(a, MASK, ties="share").tolist() == [0.5]
    constant = np.ones((1, 1, 6, 6))        # every pixel is a maximum: Quantus counts a hit
    assert pointing_game(constant, MASK).tolist() == [1.0]
    np.testing.assert_allclose(pointing_game(constant, MASK, ties="share"), [9 / 36])   # the mask's area


def test_undefined_cases_are_nan_and_bad_inputs_raise():
    empty = np.zeros((1, 6, 6), bool)
    assert np.isnan(pointing_game(hot((2, 3)), empty)).all()
    nan_map = hot((2, 3))
    nan_map[0, 0, 0, 0] = np.nan
    assert np.isnan(pointing_game(nan_map, MASK)).all()
    with pytest.raises(HarnessError, match="masks"):
        pointing_game(hot((2, 3)), np.ones((1, 5, 6), bool))
    with pytest.raises(HarnessError, match="tie"):
        pointing_game(hot((2, 3)), MASK, ties="first")
    with pytest.raises(HarnessError, match="tolerance"):
        pointing_game(hot((2, 3)), MASK, tolerance=-1)


def test_pointing_game_scores_each_image_of_a_batch():
    a = np.concatenate([hot((2, 3)), hot((5, 0)), hot((0, 0))])
    masks = np.concatenate([MASK, MASK, box(slice(0, 1), slice(0, 1))])
    assert pointing_game(a, masks).tolist() == [1.0, 0.0, 1.0]


# -- energy pointing game ----------------------------------------------------------------------------------
def test_energy_share_of_positive_mass_inside_the_mask():
    a = np.zeros((1, 1, 6, 6))
    a[0, 0, 1, 2] = 2.0
    a[0, 0, 3, 4] = 1.0      # 3 inside
    a[0, 0, 5, 5] = 1.0      # 1 outside
    a[0, 0, 2, 3] = -5.0     # negative mass is ignored, inside or out
    a[0, 0, 0, 0] = -7.0
    np.testing.assert_allclose(energy_pointing_game(a, MASK), [0.75])


def test_energy_reduces_channels_before_taking_the_positive_part():
    a = np.zeros((1, 2, 6, 6))
    a[0, 0, 2, 3], a[0, 1, 2, 3] = 4.0, -3.0   # sums to 1 inside
    a[0, 0, 5, 5] = 1.0                        # 1 outside
    np.testing.assert_allclose(energy_pointing_game(a, MASK), [0.5])


def test_energy_undefined_and_degenerate_cases():
    assert np.isnan(energy_pointing_game(hot((2, 3)), np.zeros((1, 6, 6), bool))).all()
    assert energy_pointing_game(-np.ones((1, 1, 6, 6)), MASK).tolist() == [0.0]   # no positive mass: 0
    assert energy_pointing_game(np.ones((1, 1, 6, 6)), MASK).tolist() == [9 / 36]


# -- grid pointing game ------------------------------------------------------------------------------------
def grid_segments(classes, size=8) -> np.ndarray:
    """[N, size, size] segments of 2x2 grids whose quadrant q (reading order) holds classes[n][q] everywhere
    but its border row (background, -1)."""
    half = size // 2
    segments = np.full((len(classes), size, size), -1, np.int8)
    for n, row in enumerate(classes):
        for q, label in enumerate(row):
            r, c = divmod(q, 2)
            segments[n, r * half + 1:(r + 1) * half, c * half:(c + 1) * half] = label
    return segments


def test_grid_share_in_the_target_quadrant():
    a = np.zeros((2, 1, 8, 8))
    a[0, 0, 0, 0] = 3.0      # top-left: 3
    a[0, 0, 7, 7] = 1.0      # bottom-right: 1
    a[0, 0, 0, 7] = -9.0     # top-right: negative, ignored
    a[1, 0, 4:, 4:] = 0.25   # all positive mass bottom-right (16 pixels x 0.25 = 4)
    segments = grid_segments([[0, 1, 2, 3], [5, 4, 3, 2]])
    np.testing.assert_allclose(quadrant_shares(a), [[0.75, 0, 0, 0.25], [0, 0, 0, 1]])
    assert target_quadrants(np.array([0, 2]), segments).tolist() == [0, 3]
    np.testing.assert_allclose(grid_pointing_game(a, np.array([0, 2]), segments), [0.75, 1.0])
    np.testing.assert_allclose(grid_pointing_game(a, np.array([3, 5]), segments), [0.25, 0.0])
    assert np.isnan(grid_pointing_game(a, np.array([4, 1]), segments)).tolist() == [True, True]   # not in grid


def test_grid_averaged_over_the_four_targets():
    a = np.zeros((1, 4, 1, 8, 8))
    for q in range(3):                      # explanations 0..2 put all their mass in their own quadrant
        r, c = divmod(q, 2)
        a[0, q, 0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] = 1.0
    a[0, 3, 0, 4:, 4:] = 1.0                # explanation 3: half in its quadrant, half in the top-left
    a[0, 3, 0, :4, :4] = 1.0
    np.testing.assert_allclose(grid_pointing_game_all_targets(a), [(1 + 1 + 1 + 0.5) / 4])
    with pytest.raises(HarnessError, match="quadrant"):
        grid_pointing_game_all_targets(a[:, :3])
    with pytest.raises(HarnessError, match="even"):
        quadrant_shares(np.ones((1, 1, 7, 8)))


# -- Quantus' definitions on the same arrays -----------------------------------------------------------------
def quantus_arrays():
    """Closed-form signed maps [3, 1, 6, 6] and masks [3, 6, 6] (the third map has two tied maxima)."""
    i, j = np.mgrid[0:6, 0:6]
    a = np.stack([np.sin(1.3 * i + 0.7 * j) + 0.1 * i, np.cos(0.9 * i * j) - 0.5, (i - 2.0) * (j - 3.0) / 4.0])
    m = np.zeros((3, 6, 6), bool)
    m[0, 1:4, 2:5] = True
    m[1, 3:, :3] = True
    m[2, :2, :] = True
    return a[:, None], m


# Golden numbers: Quantus 0.6.0 (numpy 2.x), metrics called on quantus_arrays() with model=None,
# disable_warnings=True and otherwise default arguments (so with Quantus' normalise-by-max):
#   PointingGame()                                                  -> [0, 1, 1]
#   AttributionLocalisation(abs=False, positive_attributions=True)  -> [0.06985364292438324, 0.26337240890583424,
#                                                                      0.49999999987500005]
#   Focus().evaluate_batch(a_batch, c_batch=[[1,0,0,0],[0,0,0,1],[0,1,0,0]]) -> [0.27809877431839203,
#                                                                      0.07713227440704762, 0.0]
# Quantus divides by (total + 1e-9), hence the agreement to ~1e-9 only.
QUANTUS_POINTING = [0.0, 1.0, 1.0]
QUANTUS_ATTRIBUTION_LOCALISATION = [0.06985364292438324, 0.26337240890583424, 0.49999999987500005]
QUANTUS_FOCUS = [0.27809877431839203, 0.07713227440704762, 0.0]


def test_matches_quantus_golden_numbers():
    a, m = quantus_arrays()
    assert pointing_game(a, m).tolist() == QUANTUS_POINTING
    np.testing.assert_allclose(energy_pointing_game(a, m), QUANTUS_ATTRIBUTION_LOCALISATION, rtol=1e-8)
    np.testing.assert_allclose(quadrant_shares(a)[[0, 1, 2], [0, 3, 1]], QUANTUS_FOCUS, rtol=1e-8, atol=1e-12)


def test_matches_quantus_directly_when_it_is_installed():
    quantus = pytest.importorskip("quantus")
    a, m = quantus_arrays()
    x, y = np.zeros((3, 1, 6, 6)), np.zeros(3, np.int64)

    def run(metric):
        return np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a.copy(), s_batch=m[:, None] * 1.0,
                                 channel_first=True), float)

    np.testing.assert_array_equal(pointing_game(a, m), run(quantus.PointingGame(disable_warnings=True)))
    np.testing.assert_allclose(energy_pointing_game(a, m), run(quantus.AttributionLocalisation(
        abs=False, positive_attributions=True, disable_warnings=True)), rtol=1e-8)
    focus = quantus.Focus(disable_warnings=True).evaluate_batch(
        a_batch=a.copy(), c_batch=np.eye(4, dtype=int)[[0, 3, 1]])
    np.testing.assert_allclose(quadrant_shares(a)[[0, 1, 2], [0, 3, 1]], focus, rtol=1e-8, atol=1e-12)


# -- on the shapes generators, through the registry ----------------------------------------------------------
def test_oracle_explanations_of_generated_shapes_score_one():
    from harness.data.shapes import generate_shapes

    single = generate_shapes(3, 16, seed=5)
    oracle = single.masks[:, None].astype(float)
    assert get_metric("pointing-game")(attributions=oracle, masks=single.masks).tolist() == [1.0] * 3
    np.testing.assert_allclose(get_metric("energy-pointing-game")(attributions=oracle, masks=single.masks), 1.0)
    inverse = 1.0 - oracle
    np.testing.assert_allclose(get_metric("energy-pointing-game")(attributions=inverse, masks=single.masks), 0.0)
    assert get_metric("pointing-game")(attributions=inverse, masks=single.masks).tolist() == [0.0] * 3

    grid = generate_shapes(2, 16, seed=5, variant="grid")
    oracle = (grid.segments == grid.labels[:, None, None])[:, None].astype(float)
    scores = get_metric("grid-pointing-game")(attributions=oracle, labels=grid.labels, segments=grid.segments)
    np.testing.assert_allclose(scores, 1.0)
    assert target_quadrants(grid.labels, grid.segments).tolist() == [0, 0]   # the label is the top-left class


def test_registry_entries():
    for name in ("pointing-game", "energy-pointing-game", "grid-pointing-game"):
        metric = get_metric(name)
        assert metric.higher_is_better and metric.source
    with pytest.raises(HarnessError, match="needs masks"):
        get_metric("pointing-game")(attributions=hot((2, 3)))
